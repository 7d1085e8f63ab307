/**
 * A slow client must bound what proxycore reads from a FastCGI backend. The core's onData returns
 * false whenever the client socket is full, so with a slow client every resume delivers one piece
 * and pauses again. php-fpm and php-cgi write STDOUT in records of 8 KiB, and one socket read
 * holds several of them: if a resume lets the socket flow again before the decoder has worked
 * through what it already holds, each resume reads a new chunk while only one record is handed on,
 * and the decoder's buffer grows with the response (measured: 42 MB buffered after 150 MB of a
 * 200 MB answer). The backend must instead be held back: bytes read from it minus bytes handed on
 * stays bounded, whatever the response size.
 */
import t, { type Test } from 'tap'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { Socket } from 'node:net'
import { guardLeaks } from '../helpers/leaks.js'
import { FastcgiClient } from '../../src/protocols/fastcgi/client.js'
import { FASTCGI_DEFAULTS } from '../../src/protocols/fastcgi/options.js'
import type { FlowControl, ResponseHandler } from '../../src/core/types.js'
import { makeExchange, testContext, unixEndpoint } from './helpers/harness.js'
import { PHP_CGI, PHP_FIXTURE, PHP_FPM, havePeer, startPhpCgi, startPhpFpm, tempDir, type Peer } from './helpers/peers.js'

const SIZE = 32 * 1024 * 1024
/** Generous: a socket's readable buffer plus one read, many times over. */
const BOUND = 2 * 1024 * 1024

async function slowClient (t: Test, start: (dir: string) => Promise<Peer>): Promise<void> {
  guardLeaks(t)
  const dir = tempDir(t)
  writeFileSync(join(dir, 't.php'), PHP_FIXTURE)
  const peer = await start(dir)
  const ctx = testContext()
  const sockets: Socket[] = []
  const connect = ctx.connect
  ctx.connect = async (endpoint) => {
    const s = await connect(endpoint)
    sockets.push(s)
    return s
  }
  const client = new FastcgiClient(unixEndpoint(peer.socketPath), { ...FASTCGI_DEFAULTS }, ctx)
  t.teardown(() => client.destroy())
  let handed = 0
  let worst = 0
  const outcome = await new Promise<string>((resolve) => {
    let flow: FlowControl | null = null
    const handler: ResponseHandler = {
      onHead (_status, _headers, f) { flow = f },
      onData (chunk) {
        handed += chunk.length
        const read = sockets[sockets.length - 1]!.bytesRead
        worst = Math.max(worst, read - handed)
        // A client whose socket is always full: every piece pauses, the next turn resumes.
        setImmediate(() => flow!.resume())
        return false
      },
      onEnd () { resolve('end') },
      onError (err) { resolve(err.code) },
      onLocalRedirect () { resolve('redirect') },
    }
    client.dispatch(makeExchange({ query: `big=${SIZE}`, env: { SCRIPT_FILENAME: join(dir, 't.php') } }), handler)
  })
  t.equal(outcome, 'end')
  t.equal(handed, SIZE, 'every byte handed on')
  t.ok(worst < BOUND, `read ahead of the client at most ${(worst / 1048576).toFixed(2)} MiB (bound ${BOUND / 1048576} MiB)`)
}

t.test('php-fpm: a 32 MiB answer to a client that pauses on every piece is read no faster than it is handed on', async (t) => {
  if (!havePeer(t, PHP_FPM)) return
  await slowClient(t, (dir) => startPhpFpm(t, dir, 1))
})

t.test('php-cgi: the same with php-cgi', async (t) => {
  if (!havePeer(t, PHP_CGI)) return
  await slowClient(t, (dir) => startPhpCgi(t, dir, 1))
})
