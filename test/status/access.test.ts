/**
 * RELIABILITY K / AC-97 (access half): the status page answers only allowed peers, decides on the
 * socket address (never X-Forwarded-For), does not exist unless mounted, and reflects nothing a
 * client sent.
 */
import t from 'tap'
import WebSocket from 'ws'
import { guardLeaks } from '../helpers/leaks.js'
import { backend, proxyServer } from '../helpers/servers.js'
import { fetchText, liveClient, statusRig } from './harness.js'

t.test('a peer outside `allow` gets 403 on the page, JSON, metrics and the live upgrade', async (t) => {
  guardLeaks(t)
  const be = await backend(t, (_req, res) => res.end('backend'))
  const rig = await statusRig(t, { routes: [{ protocol: 'http', backends: [be.address] }] }, { allow: ['10.0.0.0/8'] })
  for (const path of ['/server-status', '/server-status?format=json', '/metrics', '/server-status/live']) {
    const r = await fetchText(`${rig.url}${path}`)
    t.equal(r.status, 403, `${path} refused to loopback`)
    t.notMatch(r.body, /routes|proxycore_/, 'no data in the refusal')
  }
  const spoofed = await fetchText(`${rig.url}/server-status`, { headers: { 'x-forwarded-for': '10.1.2.3', forwarded: 'for=10.1.2.3' } })
  t.equal(spoofed.status, 403, 'X-Forwarded-For does not grant access')
  const ws = new WebSocket(`ws://127.0.0.1:${rig.port}/server-status/live`)
  const refused = await new Promise<number>((resolve, reject) => {
    ws.once('unexpected-response', (_req, res) => { resolve(res.statusCode ?? 0); res.resume(); ws.terminate() })
    ws.once('open', () => reject(new Error('live view opened for a refused peer')))
    ws.once('error', () => {})
  })
  t.equal(refused, 403, 'WebSocket upgrade refused')
  t.equal((await fetchText(`${rig.url}/other`)).body, 'backend', 'everything else still reaches the proxy')
})

t.test('AC-97: allow 127.0.0.2 only — 127.0.0.1 refused, 127.0.0.2 sees JSON, HTML and live data', async (t) => {
  guardLeaks(t)
  const be = await backend(t, (_req, res) => res.end('ok'))
  const rig = await statusRig(t, { routes: [{ name: 'app', match: { prefix: '/app/' }, protocol: 'http', backends: [be.address] }] }, { path: '/__status', allow: ['127.0.0.2'] })
  t.equal((await fetchText(`${rig.url}/__status`, { localAddress: '127.0.0.1' })).status, 403)
  const json = await fetchText(`${rig.url}/__status?format=json`, { localAddress: '127.0.0.2' })
  t.equal(json.status, 200)
  t.equal(JSON.parse(json.body).routes[0].name, 'app')
  const html = await fetchText(`${rig.url}/__status`, { localAddress: '127.0.0.2' })
  t.equal(html.status, 200)
  t.match(html.body, /<table/)
  t.match(html.body, />app</)
  const ws = new WebSocket(`ws://127.0.0.1:${rig.port}/__status/live`, { localAddress: '127.0.0.2' })
  const first = await new Promise<string>((resolve, reject) => { ws.once('message', (d) => resolve(String(d))); ws.once('error', reject) })
  await new Promise<void>((resolve) => { ws.once('close', () => resolve()); ws.close() })
  t.equal(JSON.parse(first).snapshot.routes[0].name, 'app', 'live snapshot pushed to the allowed peer')
})

t.test('AC-97: query strings a client sent are never reflected, raw or otherwise', async (t) => {
  guardLeaks(t)
  const be = await backend(t, (_req, res) => res.end('ok'))
  const rig = await statusRig(t, { routes: [{ name: 'app', protocol: 'http', backends: [be.address] }] })
  t.equal((await fetchText(`${rig.url}/x?token=abc<script>alert(1)</script>`)).status, 200)
  const live = await liveClient(`ws://127.0.0.1:${rig.port}/server-status/live?token=abc<script>`)
  t.teardown(() => live.close())
  const pushed = JSON.stringify(await live.next())
  for (const path of ['/server-status?token=abc<script>', '/server-status?format=json&token=abc<script>', '/metrics?token=abc<script>']) {
    const r = await fetchText(`${rig.url}${path}`)
    t.equal(r.status, 200, path)
    t.notMatch(r.body, /abc<script>|token=abc|abc%3Cscript/i, `${path}: no trace of the query`)
  }
  t.notMatch(pushed, /token=abc|abc<script>/, 'nor in live pushes')
})

t.test('AC-97: disabled by default — without createStatus, /server-status is the proxy\'s 404', async (t) => {
  guardLeaks(t)
  const be = await backend(t, (_req, res) => res.end('api'))
  const { url } = await proxyServer(t, { routes: [{ match: { prefix: '/api/' }, protocol: 'http', backends: [be.address] }] })
  for (const path of ['/server-status', '/server-status?format=json', '/metrics']) {
    const r = await fetchText(`${url}${path}`)
    t.equal(r.status, 404, path)
    t.match(r.body, /ERR_NO_ROUTE/)
  }
})
