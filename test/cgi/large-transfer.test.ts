/**
 * CGI under large transfers (RELIABILITY §2.13, rule 5): a response far larger than the proxy's
 * memory bound goes to a slow client at its pace with bounded proxy RSS; a client that stops
 * reading is cut after `timeouts.clientIdle` (ERR_CLIENT_TIMEOUT) and the script's whole group is
 * stopped and reaped; a large upload with a Content-Length reaches a slow-reading script byte for
 * byte; a script killed mid-body gives a truncated response (no final chunk, no padding).
 * Sizes are above the asserted RSS bound, so buffering the transfer would fail the test.
 */
import t from 'tap'
import { connect, type Socket } from 'node:net'
import { request } from 'node:http'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { guardLeaks, processGroup, waitFor } from '../helpers/leaks.js'
import type { SpawnSpec } from '../../src/spawn/types.js'
import { cgiProxy, havePeer, tempDir, writeScripts } from './harness.js'

const execFileP = promisify(execFile)
const CURL = '/usr/bin/curl'

const MiB = 1024 * 1024
// Below every transfer here (100 MiB of stderr, a 128 MiB upload, a 160 MiB answer): none is held
// whole. Measured 31-46 MiB on Node 20-24, most of it garbage not yet collected.
const RSS_BOUND = 96 * MiB
const OUT_MIB = 160

const SCRIPTS: Record<string, string> = {
  'big.sh': `#!/bin/sh\nprintf 'Content-Type: application/octet-stream\\nX-Pid: %s\\n\\n' $$\nhead -c ${OUT_MIB}M /dev/zero\n`,
  // Reads its body slowly (a pause first, so the upload backs up), answers with the byte count.
  'sink.sh': "#!/bin/sh\nn=$(sleep 1; wc -c)\nprintf 'Content-Type: text/plain\\n\\n%s' \"$n\"\n",
  // Reads its body to EOF, then records what it read: the side effect a cut upload must never reach.
  'count.sh': "#!/bin/sh\necho $$ >> started\nn=$(wc -c)\necho \"$n\" >> seen\nprintf 'Content-Type: text/plain\\n\\n%s' \"$n\"\n",
  // 100 MiB of stderr from a background writer while stdout goes to a slow client: the response
  // can only end if stderr is drained throughout (the script waits for the writer).
  'noisy.sh': "#!/bin/sh\nprintf 'Content-Type: application/octet-stream\\n\\n'\n(head -c 100M /dev/zero | tr '\\0' e >&2) &\nhead -c 32M /dev/zero\nwait\n",
  'die.sh': "#!/bin/sh\nprintf 'Content-Type: text/plain\\nX-Pid: %s\\n\\n' $$\nhead -c 1000000 /dev/zero | tr '\\0' a\nkill -9 $$\n",
  'die-cl.sh': "#!/bin/sh\nprintf 'Content-Type: text/plain\\nContent-Length: 2000000\\nX-Pid: %s\\n\\n' $$\nhead -c 1000000 /dev/zero | tr '\\0' a\nkill -9 $$\n"
}

/** Peak RSS growth of this process (the proxy runs in it) while `fn` runs. */
async function rssGrowth<T> (fn: () => Promise<T>): Promise<{ result: T, base: number, peak: number }> {
  const base = process.memoryUsage().rss
  let peak = base
  const timer = setInterval(() => { peak = Math.max(peak, process.memoryUsage().rss) }, 20)
  try {
    const result = await fn()
    peak = Math.max(peak, process.memoryUsage().rss)
    return { result, base, peak }
  } finally {
    clearInterval(timer)
  }
}

interface RawResult { head: string, bodyBytes: number, tail: Buffer }

/**
 * GET `path` on a raw socket (Connection: close), handing each chunk to `onChunk`; resolves when
 * the proxy closes the connection. Keeps the head and the last bytes only.
 */
function rawGet (port: number, path: string, onChunk: (sock: Socket, total: number, head: string) => void): Promise<RawResult> {
  return new Promise((resolve, reject) => {
    const sock = connect(port, '127.0.0.1')
    let head = ''
    let headDone = false
    let pending: Buffer = Buffer.alloc(0)
    let bodyBytes = 0
    let tail: Buffer = Buffer.alloc(0)
    sock.on('data', (c: Buffer) => {
      if (!headDone) {
        pending = Buffer.concat([pending, c])
        const end = pending.indexOf('\r\n\r\n')
        if (end === -1) return
        headDone = true
        head = pending.subarray(0, end).toString('latin1')
        c = pending.subarray(end + 4)
      }
      bodyBytes += c.length
      tail = c.length >= 16 ? c.subarray(-16) : Buffer.concat([tail, c]).subarray(-16)
      onChunk(sock, bodyBytes, head)
    })
    sock.on('error', () => {})
    sock.on('close', () => headDone ? resolve({ head, bodyBytes, tail }) : reject(new Error(`closed before the head: ${pending.toString('latin1')}`)))
    sock.write(`GET ${path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`)
  })
}

const pidIn = (head: string): number => Number(/^x-pid: (\d+)$/im.exec(head)?.[1])
/** Gone: no process of the group left, zombies included (someone reaped them). */
const reaped = (pgid: number): boolean => processGroup(pgid).length === 0

type Launcher = 'direct' | 'fork-server'

async function setup (t: Parameters<typeof tempDir>[0], launcher: Launcher = 'fork-server', spawn: Partial<SpawnSpec> = {}): Promise<Awaited<ReturnType<typeof cgiProxy>> & { dir: string }> {
  const dir = tempDir(t)
  writeScripts(dir, SCRIPTS)
  return { dir, ...await cgiProxy(t, { cgi: { launcher, ...spawn } }, [{
    match: { prefix: '/c/' },
    protocol: 'cgi',
    spawn: 'cgi',
    docroot: dir,
    stripPrefix: true,
    timeouts: { headers: '30s', idle: '30s', clientIdle: '2s' },
    requestBuffering: false
  }]) }
}

t.test(`a ${OUT_MIB} MiB CGI response to a client that reads slowly: whole, at its pace, bounded proxy RSS`, async (t) => {
  if (!havePeer(t, CURL)) return
  guardLeaks(t)
  const p = await setup(t)
  // curl in its own process, so this process's RSS is the proxy's; --limit-rate makes it a slow
  // reader (the script writes far faster): the script must be held, not buffered.
  const { result, base, peak } = await rssGrowth(() => execFileP(CURL, ['-sS', '--limit-rate', '48M', '-o', '/dev/null', '-w', '%{http_code} %{size_download}', `${p.url}/c/big.sh`]))
  t.comment(`rss base ${(base / MiB).toFixed(1)} MiB, peak ${(peak / MiB).toFixed(1)} MiB, growth ${((peak - base) / MiB).toFixed(1)} MiB for ${OUT_MIB} MiB`)
  // curl exits non-zero on a response without its last chunk: this resolving means a clean end.
  t.equal(result.stdout, `200 ${OUT_MIB * MiB}`, `all ${OUT_MIB} MiB arrived and the response ended cleanly`)
  t.ok(peak - base < RSS_BOUND, `proxy RSS grew ${((peak - base) / MiB).toFixed(1)} MiB < ${RSS_BOUND / MiB} MiB`)
})

for (const launcher of ['direct', 'fork-server'] as const) {
t.test(`${launcher}: a client that stops reading is cut after clientIdle (ERR_CLIENT_TIMEOUT), the script group stopped and reaped`, async (t) => {
  guardLeaks(t)
  const p = await setup(t, launcher)
  let pgid = 0
  let pausedAt = 0
  let cutAfter = -1
  let groupWhileCut: string[] = []
  const r = await rawGet(p.port, '/c/big.sh', (sock, total, head) => {
    if (pausedAt !== 0 || total < MiB) return
    pgid = pidIn(head)
    pausedAt = Date.now()
    sock.pause()
    // The proxy's FIN waits behind the kernel buffers the client does not read: watch the log,
    // then read on to see how the response ends.
    void waitFor(() => p.lines.some((l) => l.obj.code === 'ERR_CLIENT_TIMEOUT'), 30_000, 20).then(() => {
      cutAfter = Date.now() - pausedAt
      groupWhileCut = processGroup(pgid).map((x) => `${x.pid} ${x.comm} ${x.state}`)
      sock.resume()
    })
  })
  t.equal(pgid, pidIn(r.head))
  t.ok(pgid > 0, 'the script told its pid')
  t.ok(cutAfter >= 1500, `cut after ${cutAfter} ms: not before clientIdle (2 s)`)
  t.ok(cutAfter < 25_000, 'and not much later')
  const line = p.lines.find((l) => l.obj.code === 'ERR_CLIENT_TIMEOUT')
  t.equal(line?.level, 'warn', 'logged once as the client\'s fault')
  t.notOk(r.tail.toString('latin1').endsWith('\r\n0\r\n\r\n'), 'no last chunk: the client sees a cut response')
  t.ok(r.bodyBytes < OUT_MIB * MiB, 'far from the whole body')
  t.comment(`group ${pgid} right after the cut: ${groupWhileCut.join(', ') || 'empty'}`)
  t.ok(await waitFor(() => reaped(pgid), 10_000), 'every process of the script group is gone and reaped (no zombie)')
})
}

t.test('100 MiB of stderr while stdout waits on a slow client: drained, capped in the log, bounded RSS', async (t) => {
  if (!havePeer(t, CURL)) return
  guardLeaks(t)
  const p = await setup(t)
  const { result, base, peak } = await rssGrowth(() => execFileP(CURL, ['-sS', '--limit-rate', '16M', '-o', '/dev/null', '-w', '%{http_code} %{size_download}', `${p.url}/c/noisy.sh`]))
  t.comment(`rss growth ${((peak - base) / MiB).toFixed(1)} MiB`)
  t.equal(result.stdout, `200 ${32 * MiB}`, 'the whole response, ended cleanly (the script was never blocked on stderr)')
  const stderr = p.lines.filter((l) => l.obj.stream === 'stderr')
  t.ok(stderr.length > 0 && stderr.length <= 102, `stderr logged in ${stderr.length} lines (at most 100 + markers)`)
  const logged = stderr.reduce((n, l) => n + (l.msg.match(/e/g)?.length ?? 0), 0)
  t.ok(logged <= 64 * 1024, `at most maxStderr (64 KiB) of it logged (${logged} bytes)`)
  t.ok(peak - base < RSS_BOUND, `proxy RSS grew ${((peak - base) / MiB).toFixed(1)} MiB < ${RSS_BOUND / MiB} MiB`)
})

t.test('a 128 MiB upload with a Content-Length to a script that reads slowly: byte for byte, bounded proxy RSS', async (t) => {
  guardLeaks(t)
  const p = await setup(t)
  const total = 128 * MiB
  const { result, base, peak } = await rssGrowth(() => new Promise<{ status: number, text: string }>((resolve, reject) => {
    const req = request(`${p.url}/c/sink.sh`, { method: 'POST', agent: false, headers: { 'content-length': total } }, (res) => {
      let text = ''
      res.setEncoding('latin1')
      res.on('data', (c: string) => { text += c })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text }))
      res.on('error', reject)
    })
    req.on('error', reject)
    const chunk = Buffer.alloc(MiB, 0x61)
    let sent = 0
    const pump = (): void => {
      while (sent < total) {
        sent += chunk.length
        if (!req.write(chunk)) { req.once('drain', pump); return }
      }
      req.end()
    }
    pump()
  }))
  t.comment(`rss base ${(base / MiB).toFixed(1)} MiB, peak ${(peak / MiB).toFixed(1)} MiB, growth ${((peak - base) / MiB).toFixed(1)} MiB for a 128 MiB upload`)
  t.equal(result.status, 200)
  t.equal(result.text.trim(), String(total), 'the script read exactly CONTENT_LENGTH bytes')
  t.ok(peak - base < RSS_BOUND, `proxy RSS grew ${((peak - base) / MiB).toFixed(1)} MiB < ${RSS_BOUND / MiB} MiB`)
})

for (const launcher of ['direct', 'fork-server'] as const) {
t.test(`${launcher}: a script killed by SIGKILL mid-body: truncated response, no last chunk, no padding, ERR_BACKEND_CLOSED`, async (t) => {
  guardLeaks(t)
  const p = await setup(t, launcher)
  for (const [name, chunked] of [['die.sh', true], ['die-cl.sh', false]] as const) {
    const before = p.lines.length
    const r = await rawGet(p.port, `/c/${name}`, () => {})
    const tail = r.tail.toString('latin1')
    if (chunked) {
      t.match(r.head, /transfer-encoding: chunked/i, `${name}: chunked`)
      t.ok(r.bodyBytes > 1_000_000 && r.bodyBytes < 1_000_000 + 64 * 1024, `${name}: the bytes written plus chunk framing (${r.bodyBytes})`)
      t.notOk(tail.endsWith('0\r\n\r\n'), `${name}: no last chunk`)
    } else {
      t.match(r.head, /content-length: 2000000/i, `${name}: the script's Content-Length`)
      t.equal(r.bodyBytes, 1_000_000, `${name}: exactly the bytes written, no padding`)
    }
    t.ok(tail.endsWith(chunked ? 'aaaa\r\n' : 'aaaa'), `${name}: ends with the script's own bytes`)
    const logged = p.lines.slice(before).filter((l) => l.level === 'error' || l.level === 'warn')
    t.same(logged.map((l) => l.obj.code), ['ERR_BACKEND_CLOSED'], `${name}: one ERR_BACKEND_CLOSED line`)
    const pgid = pidIn(r.head)
    t.ok(await waitFor(() => reaped(pgid), 10_000), `${name}: its group is gone and reaped`)
  }
})
}

for (const launcher of ['direct', 'fork-server'] as const) {
t.test(`${launcher}: a client that hangs up mid-upload: the script never reads a short body to EOF`, async (t) => {
  guardLeaks(t)
  // A script that takes its time to stop (here: a killSignal it ignores, then SIGTERM 2 s later;
  // in life a SIGTERM handler, or a busy machine): an EOF on its stdin in that window would let
  // it act on the short body as if it were whole.
  const p = await setup(t, launcher, { killSignal: 'SIGWINCH', stopTimeout: 2000 })
  const lines = (file: string): string[] => existsSync(join(p.dir, file)) ? readFileSync(join(p.dir, file), 'utf8').split('\n').filter((l) => l !== '') : []
  const ROUNDS = 2
  for (let i = 1; i <= ROUNDS; i++) {
    const sock = connect(p.port, '127.0.0.1')
    sock.on('error', () => {})
    sock.write('POST /c/count.sh HTTP/1.1\r\nHost: x\r\nContent-Length: 8000000\r\n\r\n')
    sock.write(Buffer.alloc(MiB, 0x61))
    // The script runs and is reading its body: now the client goes away, 7 MB short.
    t.ok(await waitFor(() => lines('started').length === i, 10_000), `round ${i}: the script started`)
    sock.destroy()
    const pgid = Number(lines('started')[i - 1])
    // Orphaned zombies are pid 1's to reap (guardLeaks checks ours): no live member is enough here.
    t.ok(await waitFor(() => processGroup(pgid).every((x) => x.state === 'Z'), 15_000), `round ${i}: its group is stopped`)
  }
  t.same(lines('seen'), [], 'no script ever got EOF after a short body (CONTENT_LENGTH 8000000)')
})
}
