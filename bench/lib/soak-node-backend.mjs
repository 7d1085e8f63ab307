// The soak's Node HTTP backend, spawned by proxycore (handoff fd0: the listening socket is fd 0).
// POST: "<sha256> <bytes>" of the body. GET ?N: N bytes of the lib/gen.mjs stream. GET ?slow:
// answers after 6 s (past the route's headers timeout). SIGTERM: close and exit.
import { createServer } from 'node:http'
import { createHash } from 'node:crypto'
import { genStream } from './gen.mjs'

const server = createServer((req, res) => {
  const q = (req.url ?? '').split('?')[1] ?? ''
  if (req.method === 'POST') {
    const h = createHash('sha256')
    let n = 0
    req.on('data', (c) => { n += c.length; h.update(c) })
    req.on('end', () => { res.setHeader('content-type', 'text/plain'); res.end(`${h.digest('hex')} ${n}\n`) })
    return
  }
  if (q === 'slow') {
    const t = setTimeout(() => res.end('late\n'), 6000)
    res.on('close', () => clearTimeout(t))
    return
  }
  const n = /^\d+$/.test(q) ? Number(q) : 0
  res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': n })
  genStream(n).pipe(res)
})
server.keepAliveTimeout = 60_000
server.listen({ fd: 0 })
process.on('SIGTERM', () => { server.close(() => process.exit(0)); server.closeAllConnections?.() })
