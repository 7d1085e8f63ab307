/**
 * A script whose response is over while its request body is still being written to its stdin (it
 * answered first: a Content-Length response, a closed stdout, a local redirect) must never see EOF
 * on a short stdin: `head -c "$CONTENT_LENGTH" > upload` or `wc -c` would take the part for the
 * whole body and act on it. The body goes on to stdin after the response (then EOF: a full read,
 * test/cgi/body-after-response.test.ts); when it cannot (the client hung up) stdin stays open,
 * without EOF, until the script is gone (stopped after `linger`), as after an aborted upload: a
 * read here is either the whole body or none. Buffered (spooled) and streamed bodies alike. And one
 * whose exchange was aborted before its streams were handed over ('spawn') gets no EOF either.
 */
import t from 'tap'
import { EventEmitter } from 'node:events'
import { existsSync, readFileSync } from 'node:fs'
import { request } from 'node:http'
import { join } from 'node:path'
import { SpawnManager } from '../../src/spawn/manager.js'
import type { PipeRequest, PipeStarter } from '../../src/spawn/pipe-starter.js'
import type { ProcessStarter } from '../../src/core/types.js'
import { guardLeaks, processGroup, waitFor } from '../helpers/leaks.js'
import { proxyServer } from '../helpers/servers.js'
import { captureLogger, fetchRaw, scriptsProxy, tempDir, writeScripts } from './harness.js'

// Each answers at once, then reads its whole stdin and records how many bytes it got before EOF.
const READ = 'n=$(wc -c)\necho "$n" > "$0.read"\n'
const SCRIPTS: Record<string, string> = {
  'cl.sh': `#!/bin/sh\necho $$ > "$0.pid"\nprintf 'Content-Type: text/plain\\nContent-Length: 2\\n\\nok'\n${READ}`,
  // Reads only after its response ended (200 ms after the EOF) and before `linger` stops it.
  'closed.sh': `#!/bin/sh\necho $$ > "$0.pid"\nprintf 'Content-Type: text/plain\\n\\nok'\nexec 1>&-\nsleep 1\n${READ}`,
  'redirect.sh': `#!/bin/sh\necho $$ > "$0.pid"\nprintf 'Location: /c/ok.sh\\n\\n'\n${READ}`,
  'ok.sh': "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\nok'\n"
}
const SIZE = 4 << 20

for (const requestBuffering of [true, false]) {
  t.test(`requestBuffering ${String(requestBuffering)}: no EOF on a short stdin after the response is over`, async (t) => {
    guardLeaks(t)
    const p = await scriptsProxy(t, SCRIPTS, { localRedirects: true, requestBuffering, timeouts: { headers: '20s', idle: '20s' }, options: { linger: 2000 } })
    const dir = p.dir
    const body = Buffer.alloc(SIZE, 0x61)
    for (const name of ['cl.sh', 'closed.sh', 'redirect.sh']) {
      const r = await fetchRaw(`${p.url}/c/${name}`, { method: 'POST', body })
      t.same([r.status, r.body.toString(), r.complete], [200, 'ok', true], `${name}: answered`)
      const pidFile = join(dir, `${name}.pid`)
      t.ok(await waitFor(() => existsSync(pidFile) && readFileSync(pidFile, 'utf8').endsWith('\n'), 10000), `${name}: pid written`)
      const pid = Number(readFileSync(pidFile, 'utf8'))
      t.ok(await waitFor(() => processGroup(pid).every((q) => q.state === 'Z'), 15000), `${name}: the script is gone (stopped after linger)`)
      const readFile = join(dir, `${name}.read`)
      // Gone, it either read the whole body (it was fast enough) or was stopped still waiting for it.
      const got = existsSync(readFile) ? readFileSync(readFile, 'utf8').trim() : null
      t.ok(got === null || got === String(SIZE), `${name}: never EOF after a short body (read ${String(got)} of ${SIZE})`)
    }
  })
}

/**
 * The real child, with its 'spawn' handed on only when the test says: a fork-server child is
 * exec'd (and its stop begins) before its stdio connections arrive and 'spawn' fires, so an abort
 * can come in between. No real launcher makes that window wide enough to hit on purpose.
 */
type PipeChild = ReturnType<PipeStarter['launch']>

class LateSpawn extends EventEmitter {
  private spawned = false
  private released = false
  constructor (readonly real: PipeChild) {
    super()
    real.on('error', (err: Error) => this.emit('error', err))
    real.on('exit', (code: number | null, signal: NodeJS.Signals | null) => this.emit('exit', code, signal))
    real.once('spawn', () => { this.spawned = true; this.maybeSpawn() })
  }

  get pid (): number | undefined { return this.real.pid }
  get stdin (): PipeChild['stdin'] { return this.real.stdin }
  get stdout (): PipeChild['stdout'] { return this.real.stdout }
  get stderr (): PipeChild['stderr'] { return this.real.stderr }
  release (): void { this.released = true; this.maybeSpawn() }
  private maybeSpawn (): void { if (this.spawned && this.released) this.emit('spawn') }
}

t.test('aborted before its \'spawn\': the script never sees EOF on the body it was not sent', async (t) => {
  guardLeaks(t)
  const dir = tempDir(t)
  // Ignores SIGTERM (so does `wc`, the ignored disposition survives exec): alive until SIGKILL.
  writeScripts(dir, { 'trap.sh': `#!/bin/sh\ntrap '' TERM\necho $$ > "$0.pid"\n${READ}` })
  const manager = new SpawnManager()
  t.teardown(() => manager.close())
  manager.add('cgi', { socketType: 'pipe', copyEnvironment: ['PATH'], stopTimeout: 500, launcher: 'direct' })
  await manager.start()
  const real = manager.pipeStarter('cgi')
  const children: LateSpawn[] = []
  let kills = 0
  const starter = {
    launch: (req: PipeRequest) => { const c = new LateSpawn(real.launch(req)); children.push(c); return c },
    kill: (c: LateSpawn) => { kills++; real.kill(c.real) }
  }
  const { logger } = captureLogger()
  const { url } = await proxyServer(t, {
    routes: [{ match: { prefix: '/c/' }, protocol: 'cgi', spawn: 'cgi', docroot: dir, stripPrefix: true }],
    processStarters: { cgi: starter as unknown as ProcessStarter },
    logger
  })
  const req = request(`${url}/c/trap.sh`, { method: 'POST', agent: false, headers: { 'content-length': '1000' } })
  req.on('error', () => {})
  req.end(Buffer.alloc(1000, 0x62))
  const pidFile = join(dir, 'trap.sh.pid')
  t.ok(await waitFor(() => existsSync(pidFile) && readFileSync(pidFile, 'utf8').endsWith('\n'), 10000), 'the script runs, waiting for its stdin')
  const pid = Number(readFileSync(pidFile, 'utf8'))
  req.destroy()
  t.ok(await waitFor(() => kills === 1, 10000), 'the client\'s hang-up stops the script')
  children[0].release()
  t.ok(await waitFor(() => processGroup(pid).every((q) => q.state === 'Z'), 15000), 'the script is gone (SIGKILL after stopTimeout)')
  const readFile = join(dir, 'trap.sh.read')
  const got = existsSync(readFile) ? readFileSync(readFile, 'utf8').trim() : null
  t.equal(got, null, `no EOF on its empty stdin (it read ${String(got)} of 1000 bytes)`)
})
