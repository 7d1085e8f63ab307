// node:http + npm fastcgi-client 0.2.0 in front of a FastCGI server: the Node FastCGI peer.
// node fastcgi-client.mjs <socketPath> <docroot>
import { createServer } from 'node:http'
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const fastcgiConnector = require('fastcgi-client')
const [sockFile, docroot] = process.argv.slice(2)
const client = fastcgiConnector({ sockFile, skipCheckServer: false })
client.on('error', (err) => console.error('fastcgi-client:', err.message))

function onRequest (req, res) {
  const q = req.url.indexOf('?')
  const path = q < 0 ? req.url : req.url.slice(0, q)
  const params = {
    GATEWAY_INTERFACE: 'CGI/1.1', SERVER_PROTOCOL: `HTTP/${req.httpVersion}`, SERVER_SOFTWARE: 'node',
    REQUEST_METHOD: req.method, REQUEST_URI: req.url, QUERY_STRING: q < 0 ? '' : req.url.slice(q + 1),
    SCRIPT_NAME: path, SCRIPT_FILENAME: docroot + path, DOCUMENT_ROOT: docroot,
    REMOTE_ADDR: req.socket.remoteAddress, REMOTE_PORT: String(req.socket.remotePort),
    SERVER_ADDR: '127.0.0.1', SERVER_PORT: String(req.socket.localPort), SERVER_NAME: 'localhost',
    CONTENT_LENGTH: req.headers['content-length'] ?? '', CONTENT_TYPE: req.headers['content-type'] ?? '',
  }
  for (const [k, v] of Object.entries(req.headers)) params[`HTTP_${k.toUpperCase().replace(/-/g, '_')}`] = String(v)
  client.request(params, (err, fr) => {
    if (err) { res.statusCode = 502; res.end(); return }
    let head = Buffer.alloc(0)
    let inBody = false
    fr.stdout.on('data', (c) => {
      if (inBody) { res.write(c); return }
      head = Buffer.concat([head, c])
      const end = head.indexOf('\r\n\r\n')
      if (end < 0) return
      let status = 200
      for (const line of head.subarray(0, end).toString('latin1').split('\r\n')) {
        const i = line.indexOf(':')
        const name = line.slice(0, i).trim()
        const value = line.slice(i + 1).trim()
        if (name.toLowerCase() === 'status') status = parseInt(value, 10)
        else res.setHeader(name, value)
      }
      res.writeHead(status)
      inBody = true
      const rest = head.subarray(end + 4)
      if (rest.length > 0) res.write(rest)
    })
    fr.stdout.on('end', () => res.end())
    fr.stderr.on('data', () => {})
    req.pipe(fr.stdin)
  })
}

client.on('ready', () => {
  const server = createServer(onRequest)
  server.keepAliveTimeout = 60_000
  server.listen(0, '127.0.0.1', () => console.log(`LISTENING ${server.address().port}`))
})
process.on('SIGTERM', () => process.exit(0))
