/**
 * A custom adapter that hands `onData` a chunk node:http cannot write (a number, an object, null)
 * after the head, from its own event handler as a real adapter does. Before, `res.write` threw the
 * TypeError back into the adapter (in a socket 'data' handler: an uncaught exception, the process
 * gone) and the client got a clean, empty 200. Now the exchange fails with ERR_INTERNAL (a cut
 * response: the head was sent), logged with the adapter; a string is still written as UTF-8.
 */
import t from 'tap'
import { guardLeaks } from '../helpers/leaks.js'
import { settled } from '../helpers/counters.js'
import { scriptedAdapter } from '../helpers/adapters.js'
import { get, proxyServer } from '../helpers/servers.js'

guardLeaks(t)

const threw: string[] = []
const odd = scriptedAdapter('audit-odd-data', (ex, h, done) => {
  setImmediate(() => {
    done()
    h.onHead(200, ['content-type', 'text/plain'], { resume () {} })
    const chunk = ex.path === '/number' ? 123 : ex.path === '/object' ? { a: 1 } : ex.path === '/null' ? null : 'text é'
    // What would reach the adapter's socket handler uncaught.
    try { h.onData(chunk as unknown as Buffer) } catch (err) { threw.push(`${ex.path}: ${(err as Error).message}`) }
    h.onEnd()
  })
})

t.test('onData with a chunk that is not a Buffer: the exchange fails, nothing is thrown into the adapter', async (t) => {
  const lines: Array<{ obj: Record<string, unknown>, msg: string }> = []
  const push = (obj: object, msg?: string): void => { lines.push({ obj: obj as Record<string, unknown>, msg: msg ?? '' }) }
  const { url, proxy } = await proxyServer(t, { logger: { debug () {}, info () {}, warn: push, error: push }, adapters: [odd], routes: [{ protocol: 'audit-odd-data', backends: ['127.0.0.1:9'] }] })
  for (const p of ['/number', '/object', '/null']) {
    const r = await get(`${url}${p}`).then(() => 'a complete response', (err: Error) => `cut (${err.message})`)
    t.match(r, /^cut/, `${p}: the response is cut, not ended as a clean empty 200`)
    t.ok(lines.some((l) => l.obj.code === 'ERR_INTERNAL' && l.obj.url === p && /onData\(\) got/.test(l.msg)), `${p}: logged with ERR_INTERNAL`)
  }
  t.same(threw, [], 'nothing was thrown into the adapter')
  const ends: number[] = []
  proxy.events.on('request:end', (e) => { ends.push(e.bytesOut) })
  const s = await get(`${url}/string`)
  t.equal(s.body.toString(), 'text é', 'a string is still written, as UTF-8')
  t.same(ends, [Buffer.byteLength('text é')], 'bytesOut counts its bytes (7), not its characters (6)')
  t.ok(await settled(proxy), 'every slot given back')
})
