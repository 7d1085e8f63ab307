/**
 * Trailers reach a client whose TE names `trailers` as a member of its own (RFC 9110 §10.1.4), in
 * any case and among other codings, and no other: `TE: x-trailers` got them (a word match).
 */
import t from 'tap'
import { guardLeaks } from '../helpers/leaks.js'
import { backend, get, proxyServer } from '../helpers/servers.js'

guardLeaks(t)

t.test('TE: trailers as a list member, nothing else', async (t) => {
  const be = await backend(t, (_req, res) => {
    res.writeHead(200, { Trailer: 'X-T' })
    res.write('body')
    res.addTrailers({ 'X-T': 'v' })
    res.end()
  })
  const { url } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [be.address] }] })
  for (const te of ['trailers', 'Trailers', 'gzip;q=0.5, trailers', 'deflate , TRAILERS ']) {
    const r = await get(url, { headers: { TE: te } })
    t.equal(r.trailers['x-t'], 'v', `TE: ${te}: the trailer is forwarded`)
    t.equal(r.body.toString(), 'body')
  }
  for (const te of ['x-trailers', 'trailers-x', 'gzip;name=trailers', 'notrailers']) {
    const r = await get(url, { headers: { TE: te } })
    t.notOk(r.trailers['x-t'], `TE: ${te}: no trailer`)
    t.equal(r.body.toString(), 'body')
  }
})
