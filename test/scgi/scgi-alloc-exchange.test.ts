/**
 * What one SCGI exchange allocates per request beyond its socket, pinned against real uWSGI: the
 * exchange is the FlowControl handed to onHead (no `{ resume }` object and closure per response),
 * and the backend socket's 'end' and 'error' listeners are plain ones (`once` wraps each in a state
 * object and a bound function). Measured with `npm run bench -- --allocations --only scgi`: these
 * and the client's shared parser options took ~600 B off each request (docs/protocols/scgi.md
 * "Cost"). Pausing and resuming through that FlowControl is covered by client.test.ts.
 */
import t from 'tap'
import type { Socket } from 'node:net'
import { connectEndpoint } from '../../src/core/connect.js'
import type { ClientContext, Endpoint } from '../../src/core/types.js'
import { scgiAdapter } from '../../src/protocols/scgi/index.js'
import { ScgiExchange } from '../../src/protocols/scgi/exchange.js'
import { guardLeaks } from '../helpers/leaks.js'
import { makeExchange, recorder, silent, unixEndpoint } from './harness.js'
import { startUwsgi, uwsgiSkip } from './uwsgi-peer.js'

const skip = uwsgiSkip()

t.test('per response: the exchange is its own FlowControl, the socket has no once-wrapped listeners', { skip }, async (t) => {
  guardLeaks(t, { timeoutMs: 10_000 })
  const peer = await startUwsgi('scgi')
  t.teardown(peer.stop)
  const sockets: Socket[] = []
  const ctx: ClientContext = {
    log: silent,
    connect: async (e: Endpoint) => { const s = await connectEndpoint(e, 2000); sockets.push(s); return s },
    limits: { maxResponseHeadSize: 8192 }
  }
  const client = scgiAdapter.createClient(unixEndpoint(peer.socketPath), scgiAdapter.parseOptions(undefined, '/options'), ctx)
  const flows: unknown[] = []
  const wrapped: string[] = []
  for (let i = 0; i < 2; i++) {
    const r = recorder()
    const handler = {
      ...r.handler,
      onHead: (...args: Parameters<typeof r.handler.onHead>) => {
        const s = sockets[i]
        for (const event of ['end', 'error', 'data']) {
          // A once() listener is a wrapper with the real one on `.listener`.
          const n = s.rawListeners(event).filter((l) => 'listener' in l).length
          if (n > 0) wrapped.push(`${event} ×${n}`)
        }
        r.handler.onHead(...args)
        flows.push(args[2])
      }
    }
    client.dispatch(makeExchange({ env: { REQUEST_METHOD: 'GET', QUERY_STRING: '', SCRIPT_NAME: '/x', SERVER_NAME: 'x', SERVER_PORT: '80', SERVER_PROTOCOL: 'HTTP/1.1' } }), handler)
    const rec = await r.finished
    t.equal(rec.status, 200, `response ${i + 1}`)
    t.ok(rec.ended, `response ${i + 1} ended`)
  }
  await client.close()
  t.same(wrapped, [], 'no once-wrapped listener on the backend socket while the response flows')
  t.equal(flows.length, 2)
  t.ok(flows.every((f) => f instanceof ScgiExchange), 'the FlowControl is the exchange itself')
  t.not(flows[0], flows[1], 'one per exchange')
})
