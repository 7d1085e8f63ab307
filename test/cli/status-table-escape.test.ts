/**
 * `proxycore status` prints the page's strings on the operator's terminal: route names, spawn names
 * and states, addresses, the `software` field — from a config (a quoted YAML name may hold any
 * character) or from whatever server the URL names. A line break in one broke the table into forged
 * rows, and ESC/BEL reached the terminal raw (`\e]0;...\a` retitles it, `\e[2J` clears it). Each
 * cell shows control characters escaped (`\xHH`, as the CLI's readable log does).
 */
import t from 'tap'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { guardLeaks } from '../helpers/leaks.js'
import { deadPort } from '../helpers/ports.js'
import { runCli, serve } from './run.js'

// Control characters but the line feeds that end the table's lines.
const CONTROL = /[\x00-\x09\x0b-\x1f\x7f-\x9f]/

t.test('status: a route name with a line break and terminal escapes stays in its cell', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  const dir = mkdtempSync(join(tmpdir(), 'pc-status-table-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const file = join(dir, 'proxycore.yaml')
  writeFileSync(file, `listen: 127.0.0.1:0
status: {}
routes:
  - name: "web\\e]0;PWNED\\a\\e[2J\\nforged\\u009b"
    protocol: http
    backends: ["127.0.0.1:${await deadPort()}"]
`)
  const s = await serve(file)
  t.teardown(() => { try { process.kill(-(s.child.pid as number), 'SIGKILL') } catch {} })
  const r = await runCli(['status', s.url])
  t.equal(r.code, 0, r.stderr)
  t.notOk(CONTROL.test(r.stdout), `no control character but the line ends:\n${JSON.stringify(r.stdout)}`)
  const lines = r.stdout.split('\n')
  t.notOk(lines.some((l) => /^forged/.test(l)), 'no forged row')
  t.match(lines.find((l) => l.startsWith('web')), /^web\\x1b\]0;PWNED\\x07\\x1b\[2J\\x0aforged\\x9b\s+http\s+\d\/1\s/, 'the name escaped, in its row')
  s.child.kill('SIGTERM')
  t.equal(await s.exited, 0)
})
