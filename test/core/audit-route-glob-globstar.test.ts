/**
 * Audit: a glob that starts with `/**\/` (`/**\/*.cgi`, "a CGI script anywhere") missed the files
 * at the top of the tree: picomatch lets `**` match no directory in `/a/**\/x` or `**\/x`, but not
 * after a leading `/`, so `/run.cgi` fell through to the next route, here the static catch-all,
 * which sent the script's source instead of running it.
 */
import t from 'tap'
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { compileMatch } from '../../src/core/router.js'
import { guardLeaks } from '../helpers/leaks.js'
import { get, proxyServer } from '../helpers/servers.js'

guardLeaks(t)

const SCRIPT = '#!/bin/sh\nprintf "Content-Type: text/plain\\n\\nRAN %s\\n" "$SCRIPT_NAME"\n'

t.test('`/**/*.cgi` runs a script at the top of the docroot too, never sends its source', async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'pc-audit-glob-'))
  t.teardown(() => rmSync(root, { recursive: true, force: true }))
  chmodSync(root, 0o755)
  mkdirSync(join(root, 'sub', 'deep'), { recursive: true, mode: 0o755 })
  for (const p of ['run.cgi', 'sub/run.cgi', 'sub/deep/run.cgi']) {
    writeFileSync(join(root, p), SCRIPT)
    chmodSync(join(root, p), 0o755)
  }
  const { url } = await proxyServer(t, {
    spawns: { cgi: { socketType: 'pipe', copyEnvironment: ['PATH'], stopTimeout: 500 } },
    routes: [
      { name: 'scripts', match: { glob: '/**/*.cgi' }, protocol: 'cgi', spawn: 'cgi', docroot: root },
      { name: 'files', protocol: 'static', docroot: root },
    ],
  })
  for (const p of ['/run.cgi', '/sub/run.cgi', '/sub/deep/run.cgi', '//run.cgi', '/sub/../run.cgi']) {
    const r = await get(`${url}${p}`)
    const body = r.body.toString()
    t.notMatch(body, '#!/bin/sh', `${p}: not the script's source`)
    if (p === '/sub/../run.cgi') continue // the CGI walk refuses `..` (400), as before
    t.equal(r.status, 200, `${p}: 200`)
    t.match(body, /^RAN \//, `${p}: the script ran`)
  }
})

t.test('a leading `/**/` matches no directory too, and only what it did before besides', async (t) => {
  const m = (glob: string, path: string): boolean => compileMatch({ glob })({ host: 'h', path, method: 'GET' })
  const cases: Array<[string, string, boolean]> = [
    ['/**/*.php', '/x.php', true],
    ['/**/*.php', '/a/b/x.php', true],
    ['/**/*.php', '/x.php/', false],
    ['/**/*.php', '/x.phps', false],
    ['/**/x', '/x', true],
    ['/**/x', '/a/x', true],
    ['/**/x', '/ax', false],
    ['/**/**/x', '/x', true],
    ['/**/', '/', true],
    ['/**/', '/a/', true],
    ['/static/**/*.css', '/static/a.css', true],
    ['/static/**/*.css', '/other/a.css', false],
    ['/**', '/anything/at/all', true],
    ['/*.php', '/a/x.php', false],
  ]
  for (const [glob, path, want] of cases) t.equal(m(glob, path), want, `${glob} ${want ? 'matches' : 'does not match'} ${path}`)
})
