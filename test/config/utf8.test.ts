/**
 * A config is UTF-8 (docs/reference/config.md). A file saved in Latin-1 or another legacy encoding
 * was decoded with U+FFFD in place of each bad byte and loaded without a word: `docroot:
 * /srv/café` in Latin-1 became `/srv/caf\uFFFD`, a directory that does not exist, and every request
 * a 404. Invalid UTF-8 is a syntax issue at the line and column of the first bad byte, in the main
 * file and in an included one; a real U+FFFD written in UTF-8, a BOM and multi-byte characters load.
 */
import t from 'tap'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import '../../src/index.js' // registers the built-in adapters, as the CLI does
import { loadConfig } from '../../src/config/load.js'
import { issueLine } from '../../src/config/report.js'
import { runCli } from '../cli/run.js'
import { guardLeaks } from '../helpers/leaks.js'

function tmp (t: { teardown: (fn: () => void) => void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'pc-utf8-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

const route = (docroot: Buffer): Buffer => Buffer.concat([
  Buffer.from('routes:\n  - protocol: fastcgi\n    backends: [127.0.0.1:1]\n    docroot: /srv/'),
  docroot,
  Buffer.from('\n'),
])

t.test('invalid UTF-8 is a syntax issue at its line and column', async (t) => {
  const dir = tmp(t)
  const file = join(dir, 'latin1.yaml')
  writeFileSync(file, route(Buffer.from('caf\xe9', 'latin1')))
  const r = await loadConfig(file)
  t.equal(r.issues.length, 1, JSON.stringify(r.issues))
  t.match(r.issues[0], { path: '', source: /latin1\.yaml:4:22$/ })
  t.match(r.issues[0] === undefined ? '' : issueLine(r.issues[0]), /syntax: not valid UTF-8 \(byte 0xe9\)/)

  // Later in a line after multi-byte characters: the column counts characters, not bytes.
  writeFileSync(file, Buffer.concat([Buffer.from('# ünïcödé\nserverName: "é€'), Buffer.from([0xc3, 0x28]), Buffer.from('"\nroutes: []\n')]))
  const r2 = await loadConfig(file)
  t.match(r2.issues, [{ source: /latin1\.yaml:2:16$/, message: /byte 0xc3/ }])

  // In an included file: reported there.
  const main = join(dir, 'main.yaml')
  writeFileSync(join(dir, 'inc.yaml'), route(Buffer.from([0xff])))
  writeFileSync(main, 'include: inc.yaml\n')
  const r3 = await loadConfig(main)
  t.match(r3.issues, [{ source: /inc\.yaml:4:19$/, message: /not valid UTF-8 \(byte 0xff\)/ }])
})

t.test('valid UTF-8 still loads: BOM, multi-byte characters, a U+FFFD written as UTF-8', async (t) => {
  const dir = tmp(t)
  const file = join(dir, 'ok.yaml')
  writeFileSync(file, Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), route(Buffer.from('café-€-😀-\ufffd', 'utf8'))]))
  const r = await loadConfig(file)
  t.same(r.issues, [])
  t.equal(r.config.routes[0]?.docroot, '/srv/café-€-😀-\ufffd')
})

t.test('proxycore check: exit 2, one line', async (t) => {
  guardLeaks(t)
  const dir = tmp(t)
  const file = join(dir, 'proxycore.yaml')
  writeFileSync(file, route(Buffer.from('caf\xe9', 'latin1')))
  const r = await runCli(['check', file])
  t.equal(r.code, 2)
  t.match(r.stderr, /proxycore\.yaml:4:22: \/: syntax: not valid UTF-8 \(byte 0xe9\)/)
})
