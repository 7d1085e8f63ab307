/**
 * docs/guides/python-scgi.md, "When something goes wrong": a request whose SCGI environment is
 * larger than uWSGI's `--buffer-size` (4 KiB by default, as in the guide's commands). Real uWSGI,
 * default buffer: what it logs, and what the client and `request:end` get.
 */
import t from 'tap'
import { spawn } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { RequestEndEvent } from '../../src/index.js'
import { assertNoLeaks, leakBaseline } from '../cgi-shared/leak-check.js'
import { waitFor } from '../helpers/leaks.js'
import { get, proxyServer } from '../helpers/servers.js'
import { connectable } from '../../bench/lib/proc.mjs'
import { ECHO_APP, UWSGI, uwsgiSkip } from './uwsgi-peer.js'

const baseline = leakBaseline()
const skip = uwsgiSkip()

t.test('an environment over uWSGI --buffer-size (default 4 KiB): 502 ERR_BACKEND_RESET, uWSGI logs it', { skip }, async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'pc-uwsgi-buffer-'))
  const socketPath = join(dir, 'app.sock')
  // The guide's external command, without --disable-logging so the refusal shows.
  const child = spawn(UWSGI, ['--plugin', 'python3', '--scgi-socket', socketPath, '--wsgi-file', ECHO_APP, '--master', '--processes', '1', '--die-on-term'],
    { detached: true, stdio: ['ignore', 'ignore', 'pipe'] })
  let log = ''
  child.stderr?.on('data', (c: Buffer) => { if (log.length < 100000) log += c.toString() })
  const exit = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  let exited = false
  void exit.then(() => { exited = true })
  t.teardown(async () => {
    if (!exited) try { process.kill(-(child.pid as number), 'SIGKILL') } catch { /* gone */ }
    await exit
    child.stderr?.destroy()
    await rm(dir, { recursive: true, force: true })
  })
  t.ok(await waitFor(async () => exited || await connectable(socketPath), 15000, 20), 'uWSGI listening')
  t.notOk(exited, 'uWSGI running')

  const { proxy, port } = await proxyServer(t, {
    routes: [{ match: { prefix: '/app/' }, protocol: 'scgi', backends: [`unix:${socketPath}`], scriptFilename: ECHO_APP }]
  })
  const events: RequestEndEvent[] = []
  proxy.events.on('request:end', (e: RequestEndEvent) => events.push(e))
  const ask = async (headers: Record<string, string>): Promise<{ status: number, body: string }> => {
    const r = await get(`http://127.0.0.1:${port}/app/x`, { headers })
    return { status: r.status, body: r.body.toString() }
  }

  t.equal((await ask({ 'x-small': 'a' })).status, 200, 'a small environment is served')
  events.length = 0
  const big = await ask({ 'x-big': 'a'.repeat(8000) })
  t.equal(big.status, 502)
  t.match(big.body, /ERR_BACKEND_RESET/)
  t.ok(await waitFor(() => events.length > 0, 5000))
  t.equal(events[0]?.error, 'ERR_BACKEND_RESET', 'request:end code')
  t.ok(await waitFor(() => log.includes('invalid SCGI request size (max 4096)'), 5000), 'uWSGI logs "invalid SCGI request size (max 4096)"')
})

t.test('no leaked fd or child', (t) => assertNoLeaks(t, baseline))
