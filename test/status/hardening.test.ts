/**
 * The status page is matched on the router's normalised path (so no other spelling of it reaches a
 * catch-all backend's own loopback-only status page), and its live view refuses cross-site
 * WebSocket upgrades (a page from another site opened in a browser on an allowed host).
 */
import t from 'tap'
import WebSocket from 'ws'
import { guardLeaks } from '../helpers/leaks.js'
import { backend, rawRequest } from '../helpers/servers.js'
import { statusRig } from './harness.js'

const SPELLINGS = [
  '//server-status',
  '/%73erver-status',
  '/server-status/../server-status',
  '/./server-status',
  '/x/..//server-status/',
  '/server-status%2F',
  'http://status.example/server-status',
  'HTTP://status.example//%73erver-status',
]

/** One request on a fresh connection: status code and body. */
async function raw (port: number, target: string, headers = ''): Promise<{ status: number, body: string }> {
  const out = await rawRequest(port, `GET ${target} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n${headers}Connection: close\r\n\r\n`)
  const m = /^HTTP\/1\.1 (\d{3})/.exec(out)
  return { status: m === null ? 0 : Number(m[1]), body: out.slice(out.indexOf('\r\n\r\n') + 4) }
}

t.test('every spelling of the status path is the status page, never the catch-all backend', async (t) => {
  guardLeaks(t)
  const seen: string[] = []
  const be = await backend(t, (req, res) => { seen.push(req.url ?? ''); res.end('backend') })
  // The absolute-form spellings name status.example (their authority is the Host): listed.
  const rig = await statusRig(t, { routes: [{ name: 'catchall', protocol: 'http', backends: [be.address] }] }, { hosts: ['status.example'] })
  for (const target of SPELLINGS) {
    const page = await raw(rig.port, target)
    t.equal(page.status, 200, `${target}: answered by the status page`)
    t.match(page.body, /<table/, `${target}: the HTML page`)
    const json = await raw(rig.port, `${target}?format=json`)
    t.equal(JSON.parse(json.body).routes[0].name, 'catchall', `${target}?format=json: the JSON snapshot`)
  }
  t.equal((await raw(rig.port, '//metrics')).status, 200, '//metrics: the metrics endpoint')
  t.match((await raw(rig.port, '/%6detrics')).body, /proxycore_/, '/%6detrics: Prometheus text')
  t.equal((await raw(rig.port, '//server-status/./live')).status, 426, 'a spelling of the live path is the live path')
  t.equal((await raw(rig.port, '/server-status-not')).body, 'backend', 'other paths still reach the backend')
  t.same(seen, ['/server-status-not'], 'the backend never saw a status spelling')
})

t.test('a refused peer gets 403 for every spelling, and nothing reaches the backend', async (t) => {
  guardLeaks(t)
  const seen: string[] = []
  const be = await backend(t, (req, res) => { seen.push(req.url ?? ''); res.end('backend') })
  const rig = await statusRig(t, { routes: [{ name: 'catchall', protocol: 'http', backends: [be.address] }] }, { allow: ['10.0.0.0/8'] })
  for (const target of [...SPELLINGS, '//metrics', '//server-status/live']) {
    const r = await raw(rig.port, target)
    t.equal(r.status, 403, `${target}: refused by the status allow-list`)
    t.notMatch(r.body, /backend|routes|proxycore_/, `${target}: no data`)
  }
  t.same(seen, [], 'the backend saw none of them')
})

/** Open the live view; the HTTP status it was refused with, or 101 and the first pushed snapshot. */
function upgrade (url: string, opts: WebSocket.ClientOptions = {}): Promise<{ status: number, first?: { type: string } }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, opts)
    ws.once('unexpected-response', (_req, res) => { res.resume(); ws.terminate(); resolve({ status: res.statusCode ?? 0 }) })
    ws.once('message', (d) => {
      ws.once('close', () => resolve({ status: 101, first: JSON.parse(String(d)) as { type: string } }))
      ws.close()
    })
    ws.once('error', (err) => { if (ws.readyState !== ws.CLOSED) reject(err) })
  })
}

t.test('the live view refuses a cross-site Origin (CSWSH) and accepts its own origin or none', async (t) => {
  guardLeaks(t)
  const seen: string[] = []
  const be = await backend(t, (req, res) => { seen.push(req.url ?? ''); res.end('backend') })
  // status.example is listed for the default-port case below (a Host by name is refused otherwise).
  const rig = await statusRig(t, { routes: [{ name: 'catchall', protocol: 'http', backends: [be.address] }] }, { hosts: ['status.example'] })
  const live = `ws://127.0.0.1:${rig.port}/server-status/live`
  for (const origin of ['https://evil.example', `http://evil.example:${rig.port}`, `http://127.0.0.1:${rig.port + 1}`, 'http://127.0.0.1', 'null', 'not a url']) {
    t.equal((await upgrade(live, { origin })).status, 403, `Origin ${origin}: 403`)
  }
  t.equal((await upgrade(live, { headers: { 'sec-websocket-origin': 'https://evil.example' }, protocolVersion: 8 })).status, 403,
    'Sec-WebSocket-Origin (protocol version 8) is checked too')
  t.equal((await upgrade(`ws://127.0.0.1:${rig.port}//server-status/live`, { origin: 'https://evil.example' })).status, 403,
    'another spelling of the live path is checked the same way')

  const same = await upgrade(live, { origin: `http://127.0.0.1:${rig.port}` })
  t.equal(same.first?.type, 'snapshot', 'the page\'s own origin gets the live view')
  const upper = await upgrade(live, { origin: `http://127.0.0.1:${rig.port}`, headers: { host: `127.0.0.1:${rig.port}`.toUpperCase() } })
  t.equal(upper.first?.type, 'snapshot', 'host compared case-insensitively')
  const defaultPort = await upgrade(live, { origin: 'https://status.example', headers: { host: 'status.example:443' } })
  t.equal(defaultPort.first?.type, 'snapshot', 'a Host naming the scheme\'s default port is the same origin')
  const none = await upgrade(live)
  t.equal(none.first?.type, 'snapshot', 'no Origin (not a browser): allowed')
  const spelled = await upgrade(`ws://127.0.0.1:${rig.port}//server-status/./live`)
  t.equal(spelled.first?.type, 'snapshot', 'another spelling of the live path is the live view')
  t.same(seen, [], 'no upgrade reached the backend')
})
