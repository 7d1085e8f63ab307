import t from 'tap'
import { guardLeaks } from '../helpers/leaks.js'
import { backend, get, proxyServer } from '../helpers/servers.js'

guardLeaks(t)

t.test('GET and POST go through to a node:http backend', async (t) => {
  const be = await backend(t, (req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      res.setHeader('x-seen-xff', String(req.headers['x-forwarded-for']))
      res.end(`${req.method} ${req.url} ${Buffer.concat(chunks).toString()}`)
    })
  })
  const { url } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address] }] })
  const r1 = await get(`${url}/hello?x=1`)
  t.equal(r1.status, 200)
  t.equal(r1.body.toString(), 'GET /hello?x=1 ')
  t.equal(r1.headers['x-seen-xff'], '127.0.0.1')
  const r2 = await get(`${url}/post`, { method: 'POST', body: 'payload' })
  t.equal(r2.body.toString(), 'POST /post payload')
})
