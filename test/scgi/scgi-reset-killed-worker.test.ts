/**
 * A uWSGI worker killed (SIGKILL) in the middle of a response without Content-Length, whose end is
 * the close of the connection. What the proxy's socket shows depends on what the worker left
 * unread, not on the kill: Linux resets a connection (unix or TCP) whose closing end still had
 * bytes in its receive queue, and ends it with a plain EOF otherwise.
 *
 * - The app never read the request body (a POST to `hang`) and the proxy had read all the worker
 *   sent: its next read fails with ECONNRESET, so the proxy tells the cut: the client's chunked
 *   body stops without its last chunk and request:end records ERR_BACKEND_RESET.
 * - The app had read the whole request (a GET): a plain EOF, the same bytes uWSGI sends at the end
 *   of every response; nothing tells them apart (uwsgi-faults.test.ts, "documented limit").
 * - Not tested, because it is a race: with response bytes still unread in the proxy's socket at
 *   the reset (a paused client), libuv drains them and reports an EOF on the poll's HUP without
 *   another read, so the ECONNRESET is never seen (docs/protocols/scgi.md, measured there).
 */
import t from 'tap'
import { spawnSync } from 'node:child_process'
import { connect, type Socket } from 'node:net'
import { waitFor } from '../helpers/leaks.js'
import { MiB, endOf, setup, workerFree } from './transfer-harness.js'
import { uwsgiSkip } from './uwsgi-peer.js'

const skip = uwsgiSkip()

interface Raw { head: string, body: Buffer, ended: 'fin' | 'error' }

/** POST `bodyLen` bytes on a raw socket (Connection: close); `onData` sees the head and the running total. */
function rawPost (port: number, path: string, bodyLen: number, onData: (head: string, got: number, chunks: Buffer[]) => void): Promise<Raw> {
  return new Promise((resolve) => {
    const sock: Socket = connect(port, '127.0.0.1')
    const chunks: Buffer[] = []
    let got = 0
    let head: string | null = null
    let ended: Raw['ended'] = 'fin'
    sock.on('data', (c: Buffer) => {
      chunks.push(c)
      got += c.length
      if (head === null) {
        const all = Buffer.concat(chunks)
        const i = all.indexOf('\r\n\r\n')
        if (i === -1) return
        head = all.toString('latin1', 0, i)
      }
      onData(head, got, chunks)
    })
    sock.on('error', () => { ended = 'error' })
    sock.on('close', () => {
      const raw = Buffer.concat(chunks)
      const i = raw.indexOf('\r\n\r\n')
      resolve({ head: head ?? raw.toString('latin1'), body: i === -1 ? Buffer.alloc(0) : raw.subarray(i + 4), ended })
    })
    sock.write(`POST ${path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: ${bodyLen}\r\n\r\n`)
    sock.write(Buffer.alloc(bodyLen, 'b'))
  })
}

/** Bytes waiting unread in the receive queues of `pid`'s connected unix sockets (ss -x Recv-Q). */
function unreadBytes (pid: number): number {
  const out = spawnSync('ss', ['-xpnH', 'state', 'established'], { encoding: 'utf8' }).stdout ?? ''
  let n = 0
  for (const line of out.split('\n')) {
    if (!line.includes(`pid=${pid},`)) continue
    n += Number(line.trim().split(/\s+/)[1]) || 0
  }
  return n
}

/** Data bytes in a chunked body so far (complete and partial chunks). */
function chunkedData (body: Buffer): number {
  let off = 0
  let n = 0
  for (;;) {
    const eol = body.indexOf('\r\n', off)
    if (eol === -1) return n
    const size = parseInt(body.toString('latin1', off, eol), 16)
    if (!(size > 0)) return n
    const start = eol + 2
    n += Math.min(size, body.length - start)
    off = start + size + 2
    if (off > body.length) return n
  }
}

t.test('a worker killed mid-response (no Content-Length) with the request body unread, after the proxy read all it sent: the reset is seen, the client response is aborted (no last chunk), ERR_BACKEND_RESET', { skip }, async (t) => {
  const s = await setup(t)
  const sent = 4 * MiB
  // The app answers at once, sends `sent` bytes, sleeps, and never reads the 128 KiB body: it stays
  // in the worker's socket.
  const url = `/app/?hang=${sent}&nocl=1`
  let killed = 0
  let unread = 0
  const r = await rawPost(s.port, url, 128 * 1024, (head, got, chunks) => {
    if (killed !== 0 || got < sent) return
    const raw = Buffer.concat(chunks)
    const body = raw.subarray(raw.indexOf('\r\n\r\n') + 4)
    if (chunkedData(body) < sent) return
    // Everything the worker wrote went through the proxy: the proxy's side of the connection holds
    // no unread byte, so the kernel's reset is what its next read returns. The worker's side holds
    // the body it never read (else its close would be a plain EOF, see the header).
    killed = Number(/^x-pid: (\d+)/im.exec(head)?.[1])
    void waitFor(() => (unread = unreadBytes(killed)) > 0, 20_000, 20).then(() => { process.kill(killed, 'SIGKILL') })
  })
  t.ok(unread > 0, `${unread} request body bytes unread in the worker's socket at the kill`)
  t.ok(killed > 0, `worker ${killed} killed after its ${sent} bytes went through`)
  t.match(r.head, /^HTTP\/1\.1 200 /)
  t.match(r.head, /^transfer-encoding: chunked$/im)
  t.equal(chunkedData(r.body), sent, 'every byte the worker sent arrived')
  t.notOk(r.body.subarray(-5).equals(Buffer.from('0\r\n\r\n')), 'no last chunk: the client can tell the response was cut')
  const end = await endOf(s, url)
  t.same([end?.status, end?.error], [200, 'ERR_BACKEND_RESET'], 'request:end records the reset')
  const logged = s.lines.filter((l) => l.level === 'error' || l.level === 'warn')
  t.same(logged.map((l) => l.obj.code), ['ERR_BACKEND_RESET'], 'one ERR_BACKEND_RESET log line')
  t.not(await workerFree(s.port), killed, 'a new worker answers the next request')
})
