// The Node floor for SCGI: node:http in front, one unix connection per request (the protocol's
// way), the netstring and the response head built and split by hand. No routing, no checks, no
// error handling worth the name: not a gateway to deploy, only the least a Node SCGI gateway can
// do per request. node floor-scgi.mjs <socketPath> <scriptFilename>
import { createServer } from 'node:http'
import { Socket } from 'node:net'
import { holdLarge, parseHead } from './floor-head.mjs'

const [socketPath, scriptFilename] = process.argv.slice(2)
// net.connect(path) builds the socket from options it then extends, Node 20's slow path (~5.8 µs
// and ~400 B promoted per socket; docs/design/architecture.md "A socket's options"). Options
// that already hold what the constructor adds cost nothing, so the floor uses them too.
const SOCKET_OPTIONS = { allowHalfOpen: false, emitClose: false, autoDestroy: true, decodeStrings: false }

const server = createServer((req, res) => {
  req.resume()
  const q = req.url.indexOf('?')
  // SCGI: CONTENT_LENGTH first, then SCGI=1 (the bench sends GETs without a body).
  let h = 'CONTENT_LENGTH\x000\x00SCGI\x001\x00'
  const add = (name, value) => { h += `${name}\x00${value}\x00` }
  add('GATEWAY_INTERFACE', 'CGI/1.1')
  add('SERVER_PROTOCOL', `HTTP/${req.httpVersion}`)
  add('REQUEST_METHOD', req.method)
  add('REQUEST_URI', req.url)
  add('QUERY_STRING', q < 0 ? '' : req.url.slice(q + 1))
  add('SCRIPT_NAME', q < 0 ? req.url : req.url.slice(0, q))
  add('SCRIPT_FILENAME', scriptFilename)
  add('REMOTE_ADDR', req.socket.remoteAddress)
  add('REMOTE_PORT', String(req.socket.remotePort))
  add('SERVER_NAME', 'localhost')
  for (let i = 0; i < req.rawHeaders.length; i += 2) add(`HTTP_${req.rawHeaders[i].toUpperCase().replace(/-/g, '_')}`, req.rawHeaders[i + 1])
  const socket = new Socket(SOCKET_OPTIONS).connect(socketPath)
  socket.write(`${Buffer.byteLength(h, 'latin1')}:${h},`, 'latin1')
  let head = null
  socket.on('data', (chunk) => {
    if (head === undefined) { holdLarge(res, chunk); res.write(chunk); return }
    head = head === null ? chunk : Buffer.concat([head, chunk])
    const end = head.indexOf('\r\n\r\n')
    if (end < 0) return
    const { status, headers } = parseHead(head, end)
    res.writeHead(status, headers)
    const rest = head.subarray(end + 4)
    if (rest.length > 0) { holdLarge(res, rest); res.write(rest) }
    head = undefined
  })
  socket.on('end', () => res.end())
  socket.on('error', () => res.destroy())
})
server.keepAliveTimeout = 60_000
server.listen(0, '127.0.0.1', () => console.log(`LISTENING ${server.address().port}`))
process.on('SIGTERM', () => process.exit(0))
