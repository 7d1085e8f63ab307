/**
 * Request handling of the status paths: `?format=` is `json` or `html` and anything else is a 400
 * with a stable code (it used to fall back to HTML silently, so a script asking `?format=xml` or a
 * typo got a 200 page it could not parse); HEAD, other methods, trailing slash, caching headers;
 * and access control with IPv4-mapped IPv6 peers and allow entries, and X-Forwarded-For.
 */
import t from 'tap'
import { createServer } from 'node:http'
import { connect } from 'node:net'
import { createProxy, silentLogger } from '../../src/index.js'
import { createStatus } from '../../src/status/index.js'
import { guardLeaks } from '../helpers/leaks.js'
import { backend, closeServer } from '../helpers/servers.js'
import { fetchText, statusRig } from './harness.js'

t.test('?format: json, html, anything else 400 ERR_BAD_REQUEST', async (t) => {
  guardLeaks(t)
  const be = await backend(t, (_req, res) => res.end('backend'))
  const rig = await statusRig(t, { routes: [{ name: 'all', match: { prefix: '/' }, protocol: 'http', backends: [be.address] }] })
  const page = `${rig.url}/server-status`
  const json = await fetchText(`${page}?format=json`)
  t.equal(json.status, 200)
  t.match(json.headers['content-type'], /^application\/json/)
  t.equal(JSON.parse(json.body).schema, 1)
  const html = await fetchText(`${page}?format=html`, { headers: { accept: 'application/json' } })
  t.equal(html.status, 200)
  t.match(html.headers['content-type'], /^text\/html/, 'format=html wins over Accept')
  t.match((await fetchText(`${page}?format=json&format=json`)).headers['content-type'], /^application\/json/, 'a repeated equal value is fine')
  t.match((await fetchText(`${page}?x=1&FORMAT=json`)).headers['content-type'], /^text\/html/, 'other parameters are ignored (names are case-sensitive)')

  for (const q of ['format=xml', 'format=prometheus', 'format=', 'format', 'format=json&format=prometheus', 'format=html&format=json', 'format=json%00']) {
    const r = await fetchText(`${page}?${q}`)
    t.equal(r.status, 400, `?${q} -> 400`)
    t.match(r.body, /^400 Bad Request\nERR_BAD_REQUEST\n/, `?${q}: stable code in the body`)
    t.match(r.body, /format/, 'and says what is wrong')
    t.equal(r.headers['cache-control'], 'no-store')
    t.not(r.body, 'backend', 'never passed on to the catch-all backend')
  }
  const headBad = await fetchText(`${page}?format=xml`, { method: 'HEAD' })
  t.equal(headBad.status, 400, 'HEAD gets the same status')
  t.equal(headBad.body, '')
})

t.test('methods, HEAD, trailing slash, caching headers', async (t) => {
  guardLeaks(t)
  const rig = await statusRig(t, { routes: [] })
  for (const p of ['/server-status', '/server-status/', '/server-status?format=json', '/metrics', '/metrics/']) {
    const get = await fetchText(`${rig.url}${p}`)
    t.equal(get.status, 200, `GET ${p}`)
    t.equal(get.headers['cache-control'], 'no-store', `GET ${p}: no-store`)
    t.equal(get.headers['x-content-type-options'], 'nosniff')
    const head = await fetchText(`${rig.url}${p}`, { method: 'HEAD' })
    t.equal(head.status, 200, `HEAD ${p}`)
    t.equal(head.body, '', `HEAD ${p}: no body`)
    t.equal(head.headers['content-type'], get.headers['content-type'])
    for (const method of ['POST', 'PUT', 'DELETE', 'OPTIONS']) {
      const r = await fetchText(`${rig.url}${p}`, { method })
      t.equal(r.status, 405, `${method} ${p}`)
      t.equal(r.headers.allow, 'GET, HEAD')
    }
  }
})

t.test('access: IPv4-mapped peers and allow entries, X-Forwarded-For never grants', async (t) => {
  guardLeaks(t)
  const proxy = await createProxy({ logger: silentLogger, routes: [] })
  const servers: Array<{ allow: string[], port: number, close: () => Promise<void> }> = []
  for (const allow of [['127.0.0.1'], ['::ffff:127.0.0.1'], ['::ffff:127.0.0.0/104'], ['127.0.0.2']]) {
    const status = createStatus(proxy, { allow, live: false })
    // A dual-stack listener: an IPv4 client's peer address is `::ffff:127.0.0.1`.
    const server = createServer((req, res) => { if (!status.handler(req, res)) proxy.handler(req, res) })
    await new Promise<void>((resolve) => server.listen(0, '::', resolve))
    const port = (server.address() as { port: number }).port
    servers.push({ allow, port, close: async () => { await status.close(); await closeServer(server) } })
  }
  t.teardown(async () => { for (const s of servers) await s.close(); await proxy.close(1000) })
  const peer = await new Promise<string>((resolve, reject) => {
    const c = connect(servers[0].port, '127.0.0.1', () => { resolve(c.localAddress ?? ''); c.destroy() })
    c.on('error', reject)
  })
  t.equal(peer, '127.0.0.1')
  const [v4, mapped, mappedCidr, other] = servers
  t.equal((await fetchText(`http://127.0.0.1:${v4.port}/server-status`)).status, 200, 'IPv4 entry, IPv4-mapped peer')
  t.equal((await fetchText(`http://127.0.0.1:${mapped.port}/server-status`)).status, 200, 'IPv4-mapped entry matches the IPv4 client')
  t.equal((await fetchText(`http://127.0.0.1:${mappedCidr.port}/server-status`)).status, 200, 'IPv4-mapped CIDR matches too')
  const spoof = await fetchText(`http://127.0.0.1:${other.port}/server-status`, { headers: { 'x-forwarded-for': '127.0.0.2', forwarded: 'for=127.0.0.2', 'x-real-ip': '127.0.0.2' } })
  t.equal(spoof.status, 403, 'forwarding headers naming an allowed address do not grant access')
  t.equal((await fetchText(`http://127.0.0.2:${other.port}/server-status`, { localAddress: '127.0.0.2' })).status, 200, 'the allowed peer itself gets in')
})
