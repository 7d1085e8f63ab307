/**
 * A main config file with nothing in it (0 bytes, only comments, a bare `---`, `null`) is refused:
 * it is a file being written (`>` truncates first, an editor saving in place) far more often than
 * a wish to serve nothing, and a SIGHUP that read it stopped every spawn and moved the listener to
 * the default address (audit 37). `{}` says "empty" on purpose and is taken, and an empty included
 * file is (a conf.d placeholder). `check` prints the one problem line and exits 2; a reload is
 * rejected and the old config keeps serving (docs/reference/cli.md).
 */
import t from 'tap'
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import '../../src/index.js'
import { loadConfig } from '../../src/config/load.js'
import { guardLeaks } from '../helpers/leaks.js'
import { freePort } from '../helpers/ports.js'
import { backend, get } from '../helpers/servers.js'
import { tempDir } from '../helpers/tmp.js'
import { runCli, serveKilled, sighupReload } from '../cli/run.js'

const EMPTY: Array<[string, string]> = [['zero.yaml', ''], ['comments.yaml', '# nothing yet\n# at all\n'], ['dashes.yaml', '---\n'], ['null.yaml', 'null\n'], ['blank.yml', '\n  \n']]

t.test('a main file with nothing in it is one issue; `{}` is an empty config', async (t) => {
  guardLeaks(t)
  const dir = tempDir(t, 'pc-audit37-empty-')
  for (const [name, text] of EMPTY) {
    const file = join(dir, name)
    writeFileSync(file, text)
    const r = await loadConfig(file)
    t.equal(r.issues.length, 1, `${name}: one issue`)
    t.match(r.issues[0], { path: '', message: /config file is empty/ }, `${name}: it says so`)
  }
  for (const [name, text] of [['braces.yaml', '{}\n'], ['empty.json', '{}']]) {
    const file = join(dir, name)
    writeFileSync(file, text)
    const r = await loadConfig(file)
    t.same(r.issues, [], `${name}: no issue`)
    t.same(r.config.routes, [], `${name}: no routes`)
  }
  // An included file with nothing in it yet is a placeholder, not the whole config.
  mkdirSync(join(dir, 'conf.d'))
  writeFileSync(join(dir, 'conf.d', 'later.yaml'), '# filled in later\n')
  writeFileSync(join(dir, 'conf.d', 'site.yaml'), 'routes:\n  - { protocol: http, backends: ["127.0.0.1:9"] }\n')
  writeFileSync(join(dir, 'main.yaml'), 'include: ["conf.d/*.yaml"]\n')
  const inc = await loadConfig(join(dir, 'main.yaml'))
  t.same(inc.issues, [], 'an empty included file: no issue')
  t.equal(inc.config.routes.length, 1, 'the other included file\'s route')
})

t.test('check: one problem line, exit 2', async (t) => {
  guardLeaks(t)
  const dir = tempDir(t, 'pc-audit37-empty-cli-')
  const file = join(dir, 'proxycore.yaml')
  writeFileSync(file, '')
  const r = await runCli(['check', file])
  t.equal(r.code, 2, 'exit 2')
  t.match(r.stderr + r.stdout, /config file is empty/, 'the line says why')
})

t.test('a SIGHUP reading a truncated file is rejected; the old config keeps serving', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  const be = await backend(t, (_req, res) => { res.end('ok') })
  const port = await freePort()
  const dir = tempDir(t, 'pc-audit37-empty-hup-')
  const file = join(dir, 'proxycore.yaml')
  const text = `listen: "127.0.0.1:${port}"\nroutes:\n  - { protocol: http, backends: ['127.0.0.1:${be.port}'] }\n`
  writeFileSync(file, text)
  const { s } = await serveKilled(t, file)
  t.equal((await get(`http://127.0.0.1:${port}/`)).status, 200, 'serving')
  const { line } = await sighupReload(s, file, '')
  t.match(line, { msg: /^reload rejected/ }, 'the reload is rejected')
  t.match(JSON.stringify(line), /config file is empty/, 'and says why')
  t.equal((await get(`http://127.0.0.1:${port}/`)).status, 200, 'the old config still serves on its address')
})
