// Hand-written node:http pipe proxy with a keep-alive agent. node pipe.mjs <backendPort>
import { Agent, createServer, request } from 'node:http'

const port = Number(process.argv[2])
const agent = new Agent({ keepAlive: true, maxSockets: 64 })
const server = createServer((req, res) => {
  const up = request({ host: '127.0.0.1', port, method: req.method, path: req.url, headers: req.headers, agent }, (ur) => {
    res.writeHead(ur.statusCode, ur.headers)
    ur.pipe(res)
  })
  up.on('error', () => { if (!res.headersSent) { res.statusCode = 502; res.end() } else res.destroy() })
  req.pipe(up)
})
server.keepAliveTimeout = 60_000
server.listen(0, '127.0.0.1', () => console.log(`LISTENING ${server.address().port}`))
process.on('SIGTERM', () => process.exit(0))
