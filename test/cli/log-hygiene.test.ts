/**
 * Log hygiene of the readable (terminal) log format, on the real CLI run on a pseudo-terminal
 * (util-linux `script`), which is where `proxycore serve` picks pino-pretty's format: bytes a
 * backend chose (a CGI script's stderr, a spawned program's output) are written one message per
 * line with CR, LF, ESC, BEL, NUL and DEL as visible `\xHH`, never as a forged second line or an
 * escape sequence the operator's terminal acts on (CVE-2009-4487's class).
 */
import t from 'tap'
import { spawn, type ChildProcess } from 'node:child_process'
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { alive, guardLeaks, waitFor } from '../helpers/leaks.js'
import { cli, ensureBuilt, root, serve } from './run.js'

interface Teardown { teardown (fn: () => void | Promise<void>): void }

const SCRIPT = '/usr/bin/script'

/** util-linux `script` gives proxycore a terminal; missing, the test skips locally and fails on CI. */
function haveScript (t: { fail (m: string): void, plan (n: number, m: string): void }): boolean {
  if (existsSync(SCRIPT)) return true
  if (process.env.CI === 'true') t.fail(`${SCRIPT} (util-linux) is not installed`)
  else t.plan(0, `${SCRIPT} (util-linux) is not installed`)
  return false
}

/** What the terminal shows, as text lines: CR LF (the tty's) made LF, pino-pretty's own colours removed. */
const plain = (s: string): string[] => s.replace(/\r\n/g, '\n').replace(/\x1b\[[0-9;]*m/g, '').split('\n')

interface PtyServed {
  url: string
  /** Everything written to the terminal so far (raw). */
  out: () => string
  /** Stop proxycore (SIGTERM) and wait until it and `script` exited. */
  stop: () => Promise<void>
}

/**
 * `proxycore serve config` with its stderr on a pseudo-terminal; resolves once it logged "serving".
 * The shell execs node, so the pid it writes is proxycore's (a session and group of its own).
 */
async function servePty (t: Teardown, dir: string, config: string): Promise<PtyServed> {
  await ensureBuilt()
  const pidFile = join(dir, 'proxycore.pid')
  const cmd = `echo $$ > '${pidFile}'; exec '${process.execPath}' '${cli}' serve '${config}'`
  // PROXYCORE_LOG_FORMAT unset: a terminal gets the readable format.
  const env = { ...process.env, PROXYCORE_LOG_FORMAT: '' }
  const child: ChildProcess = spawn(SCRIPT, ['-qfec', cmd, '/dev/null'], { cwd: root, stdio: ['pipe', 'pipe', 'pipe'], env })
  let out = ''
  child.stdout?.on('data', (c: Buffer) => { out += c.toString('latin1') })
  child.stderr?.on('data', (c: Buffer) => { out += c.toString('latin1') })
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  let done = false
  void exited.then(() => { done = true })
  const pid = (): number => { try { return Number(readFileSync(pidFile, 'utf8').trim()) } catch { return 0 } }
  // A failed test still leaves nothing running: proxycore's group, then `script`.
  t.teardown(async () => {
    const p = pid()
    if (!done && p > 0) { try { process.kill(-p, 'SIGKILL') } catch {} }
    child.stdin?.destroy()
    if (!done) child.kill('SIGKILL')
    await exited
  })
  const ok = await waitFor(() => done || /INFO\S*: \S*serving/.test(out), 60_000)
  const m = /"(http:\/\/127\.0\.0\.1:\d+)"/.exec(out)
  if (!ok || m === null) throw new Error(`proxycore did not start on the terminal:\n${out}`)
  return {
    url: m[1],
    out: () => out,
    stop: async () => {
      const p = pid()
      if (p > 0 && alive(p)) process.kill(p, 'SIGTERM')
      child.stdin?.end()
      await exited
    },
  }
}

const CGI = `#!/bin/sh
printf 'first\\n[00:00:00.000] ERROR: FORGED by the backend\\n' >&2
printf 'title \\033]0;pwned\\007 clear \\033[2J nul[\\000] del[\\177] cr[\\r]\\n' >&2
printf 'Content-Type: text/plain\\r\\n\\r\\nok\\n'
`

// A Status with byte 0x9b (8-bit CSI): the head parser takes 0x80-0xff (obs-text) and names the
// value in its error, logged as the message.
const BAD_STATUS = `#!/bin/sh
printf 'Status: 2\\2332J\\r\\nContent-Type: text/plain\\r\\n\\r\\nbad\\n'
`

t.test('a CGI script\'s stderr cannot forge a line or reach the terminal as escapes (readable format)', async (t) => {
  if (!haveScript(t)) return
  guardLeaks(t, { timeoutMs: 15_000 })
  const dir = mkdtempSync(join(tmpdir(), 'pc-loghyg-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const docroot = join(dir, 'cgi-bin')
  mkdirSync(docroot)
  writeFileSync(join(docroot, 'e.sh'), CGI)
  chmodSync(join(docroot, 'e.sh'), 0o755)
  writeFileSync(join(docroot, 'status.sh'), BAD_STATUS)
  chmodSync(join(docroot, 'status.sh'), 0o755)
  const config = join(dir, 'proxycore.yaml')
  writeFileSync(config, `listen: 127.0.0.1:0
spawns:
  cgi: { socketType: pipe, copyEnvironment: [PATH] }
routes:
  - { match: { prefix: /cgi-bin/ }, protocol: cgi, spawn: cgi, docroot: ${JSON.stringify(docroot)}, stripPrefix: true }
`)
  const s = await servePty(t, dir, config)
  const r = await fetch(`${s.url}/cgi-bin/e.sh`)
  t.equal(await r.text(), 'ok\n', 'the CGI answered')
  t.ok(await waitFor(() => s.out().includes('del['), 10_000), 'its stderr was logged')
  t.equal((await fetch(`${s.url}/cgi-bin/status.sh`)).status, 502, 'a bad Status is a 502')
  t.ok(await waitFor(() => s.out().includes('malformed Status'), 10_000), 'and logged')
  await s.stop()
  const lines = plain(s.out())
  t.notOk(lines.some((l) => l.startsWith('[00:00:00.000] ERROR')), 'no line forged by the backend')
  // Backend stderr is logged by line: the text after the LF is an entry of its own, behind the
  // proxy's time, level and fields (an LF inside a message is shown as \x0a: the spawned program below).
  t.ok(lines.some((l) => /^\[\d\d:\d\d:\d\d\.\d{3}\] WARN.*: \[00:00:00\.000\] ERROR: FORGED by the backend$/.test(l)), 'the forged text is a stderr entry behind the proxy\'s own prefix')
  const esc = lines.find((l) => l.includes('title '))
  t.ok(esc?.includes('title \\x1b]0;pwned\\x07 clear \\x1b[2J nul[\\x00] del[\\x7f] cr[\\x0d]'), `ESC, BEL, NUL, DEL and CR shown as \\xHH: ${JSON.stringify(esc)}`)
  const status = lines.find((l) => l.includes('malformed Status'))
  t.ok(status?.includes('malformed Status "2\\x9b2J"'), `the backend's C1 control in the message shown as \\x9b: ${JSON.stringify(status)}`)
  // Of the bytes below 0x20 only the tty's CR LF and pino-pretty's colours reach the terminal.
  t.notOk(/[\x00-\x08\x0b-\x1f\x7f]|\xc2[\x80-\x9f]/.test(lines.join('\n')), 'no other control byte on the terminal (C1 in UTF-8 neither)')
})

const APP = `import http from 'node:http'
process.stderr.write('spawned \\x1b]0;retitled\\x07 said\\nFORGED second line\\n')
http.createServer((req, res) => res.end('app')).listen(Number(process.env.PORT), process.env.HOST)
`

t.test('a spawned program\'s stderr (no logDir) cannot forge a line or reach the terminal as escapes', async (t) => {
  if (!haveScript(t)) return
  guardLeaks(t, { timeoutMs: 15_000 })
  const dir = mkdtempSync(join(tmpdir(), 'pc-loghyg-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const app = join(dir, 'app.mjs')
  writeFileSync(app, APP)
  const config = join(dir, 'proxycore.yaml')
  writeFileSync(config, `listen: 127.0.0.1:0
spawns:
  app: { binPath: [${JSON.stringify(process.execPath)}, ${JSON.stringify(app)}], socketName: 127.0.0.1:0, handoff: self, startTimeout: 120s }
routes:
  - { name: app, protocol: http, spawn: app }
`)
  const s = await servePty(t, dir, config)
  t.equal(await (await fetch(`${s.url}/`)).text(), 'app', 'the spawned program answers')
  t.ok(await waitFor(() => s.out().includes('FORGED second line'), 10_000), 'its stderr was logged')
  await s.stop()
  const lines = plain(s.out())
  t.notOk(lines.some((l) => l.startsWith('FORGED')), 'no line forged by the program')
  const said = lines.find((l) => l.includes('spawned '))
  t.ok(said?.includes('spawned \\x1b]0;retitled\\x07 said\\x0aFORGED second line'), `one message, escapes shown: ${JSON.stringify(said)}`)
  t.notOk(/[\x00-\x08\x0b-\x1f\x7f]/.test(lines.join('\n')), 'no other control byte on the terminal')
})

// Fails at once with its reason after an unterminated OSC (`ESC ] 0 ;`), and markup.
const FAILING = `process.stderr.write('FATAL: \\x1b]0;the real reason <script>alert(1)</script> & more\\n', () => process.exit(1))`

t.test('the status page\'s stderr tail: the text after an unterminated escape is shown, HTML escaped, JSON valid', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  const dir = mkdtempSync(join(tmpdir(), 'pc-loghyg-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const config = join(dir, 'proxycore.yaml')
  writeFileSync(config, `listen: 127.0.0.1:0
status: { path: /server-status }
spawns:
  bad:
    binPath: [${JSON.stringify(process.execPath)}, -e, ${JSON.stringify(FAILING)}]
    socketName: 127.0.0.1:0
    handoff: self
    restart: { initialDelay: 100ms, maxDelay: 100ms, maxStarts: 1, window: 30s }
routes:
  - { name: bad, match: { prefix: /bad/ }, protocol: http, spawn: bad }
`)
  const s = await serve(config)
  t.teardown(async () => {
    try { process.kill(-(s.child.pid as number), 'SIGKILL') } catch {}
    await s.exited
  })
  type Status = { spawns: Array<{ name: string, failed: boolean, stderrTail: string[] }> }
  let st: Status | null = null
  const tail = (): string[] => st?.spawns.find((x) => x.name === 'bad')?.stderrTail ?? []
  t.ok(await waitFor(async () => {
    st = JSON.parse(await (await fetch(`${s.url}/server-status?format=json`)).text()) as Status
    return tail().some((l) => l.startsWith('FATAL'))
  }, 30_000, 50), 'the spawn\'s stderr is in the JSON status (which parsed)')
  const line = tail().find((l) => l.startsWith('FATAL'))
  t.equal(line, 'FATAL: \\x1b]0;the real reason <script>alert(1)</script> & more', 'the reason after the lone escape is kept, the ESC shown as \\x1b')
  const html = await (await fetch(`${s.url}/server-status`)).text()
  t.ok(html.includes('FATAL: \\x1b]0;the real reason &#60;script&#62;alert(1)&#60;/script&#62; &#38; more'), 'the page shows it, markup escaped')
  t.notOk(html.includes('<script>alert'), 'no markup from the process reaches the page')
  t.notOk(/[\x00-\x08\x0b-\x1f]/.test(html), 'no control character reaches the HTML')
  s.child.kill('SIGTERM')
  t.equal(await s.exited, 0, 'proxycore stopped cleanly')
})
