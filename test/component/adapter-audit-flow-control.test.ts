/**
 * A custom adapter that ignores flow control (docs/adapters.md, "What the core does with an
 * adapter's bugs"): it goes on calling onData after onData returned false, to a client that reads
 * nothing. Before, the core queued every byte in the client's ServerResponse (256 MiB and counting,
 * until clientIdle cut it): memory unbounded per exchange. Now the exchange fails once the adapter
 * has delivered more than 4 MiB after it was told to pause (ERR_INTERNAL, the connection cut,
 * its abort hook fired), and its slot is given back.
 */
import t from 'tap'
import { connect } from 'node:net'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { settled } from '../helpers/counters.js'
import { scriptedAdapter } from '../helpers/adapters.js'
import { proxyServer } from '../helpers/servers.js'
import { watchAbort } from '../../src/index.js'

guardLeaks(t)

const NOFLOW = { resume () {} }

/** Pushes 64 KiB chunks as fast as it can, whatever onData returns, until it is aborted or has sent `cap`. */
const state = { pushed: 0, aborted: false, lateCalls: 0, afterAbort: 0 }
const flood = scriptedAdapter('audit-flood', (ex, h, done) => {
  const chunk = Buffer.alloc(64 * 1024, 97)
  const cap = 256 * 1024 * 1024
  state.pushed = 0
  state.aborted = false
  watchAbort(ex, () => { state.aborted = true })
  h.onHead(200, ['content-type', 'application/octet-stream'], NOFLOW)
  const more = (): void => {
    if (state.aborted || state.pushed >= cap) { done(); return }
    for (let i = 0; i < 16; i++) { h.onData(chunk); state.pushed += chunk.length }
    setImmediate(more)
  }
  more()
})

t.test('an adapter that ignores flow control: the exchange fails before its queue grows unbounded', async (t) => {
  const lines: Array<{ obj: Record<string, unknown>, msg: string }> = []
  const push = (obj: object, msg?: string): void => { lines.push({ obj: obj as Record<string, unknown>, msg: msg ?? '' }) }
  const logger = { debug () {}, info () {}, warn: push, error: push }
  const { port, proxy } = await proxyServer(t, { logger, adapters: [flood], routes: [{ protocol: 'audit-flood', backends: ['127.0.0.1:9'] }] })
  // A client that sends its request and reads nothing.
  const c = connect({ host: '127.0.0.1', port })
  c.pause()
  c.write('GET /flood HTTP/1.1\r\nHost: a\r\n\r\n')
  t.teardown(() => { c.destroy() })
  const stopped = await waitFor(() => state.aborted || state.pushed >= 256 * 1024 * 1024, 60_000)
  t.ok(stopped)
  t.ok(state.aborted, `the exchange was aborted (after ${state.pushed} bytes pushed against a paused client)`)
  t.ok(state.pushed <= 32 * 1024 * 1024, 'before the adapter pushed 32 MiB into the queue')
  c.destroy()
  t.ok(await settled(proxy), 'slot given back')
  t.ok(lines.some((l) => l.obj.code === 'ERR_INTERNAL' && /audit-flood adapter ignored flow control/.test(String((l.obj.err as Error | undefined)?.message ?? l.msg))), 'logged with ERR_INTERNAL, naming the adapter')
})

