/**
 * The HTTP adapter's backend sockets share one hidden class. undici and node:net read a dozen
 * fields of the socket per request (kParser, kWriting, kReset, _handle, _writableState…); when each
 * connection's socket had a shape of its own (a property defined on the instance for the unsolicited
 * `100 Continue` hook, src/protocols/http/client.ts), every such read saw as many shapes as there
 * were connections, and V8 handled them the slow (megamorphic) way under load. Checked with V8's
 * own %HaveSameMap on the sockets of three connections opened at once to a real node:http backend.
 */
import t from 'tap'
import { Socket } from 'node:net'
import v8 from 'node:v8'
import { guardLeaks } from '../helpers/leaks.js'
import { backend, get, proxyServer } from '../helpers/servers.js'

guardLeaks(t, { timeoutMs: 10_000 })

v8.setFlagsFromString('--allow-natives-syntax')
// V8's natives syntax parses only in code compiled after the flag is set: a Function, not a literal.
const haveSameMap = new Function('a', 'b', 'return %HaveSameMap(a, b)') as (a: object, b: object) => boolean

t.test('the sockets of concurrent backend connections share one hidden class', async (t) => {
  const N = 3
  // Each response is held until N requests are in: the proxy needs N connections at once.
  const held: Array<() => void> = []
  const be = await backend(t, (_req, res) => {
    held.push(() => res.end('ok'))
    if (held.length === N) for (const send of held.splice(0)) send()
  })
  // The proxy's backend sockets, as core/connect.ts connects them.
  const sockets: Socket[] = []
  const connect = Socket.prototype.connect
  Socket.prototype.connect = function (this: Socket, ...args: unknown[]) {
    const o = args[0] as { port?: number } | undefined
    if (typeof o === 'object' && o !== null && o.port === be.port) sockets.push(this)
    return (connect as (...a: unknown[]) => Socket).apply(this, args)
  } as typeof connect
  t.teardown(() => { Socket.prototype.connect = connect })
  const { url } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address] }] })

  const got = await Promise.all(Array.from({ length: N }, (_, i) => get(`${url}/${i}`)))
  t.same(got.map((r) => `${r.status} ${r.body.toString()}`), Array(N).fill('200 ok'), 'every request answered')
  t.equal(sockets.length, N, `${N} backend connections`)
  for (let i = 1; i < sockets.length; i++) t.ok(haveSameMap(sockets[0], sockets[i]), `socket ${i} has the shape of socket 0`)
})
