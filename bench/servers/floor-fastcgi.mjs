// The Node floor for FastCGI: node:http in front, up to <connections> kept-alive connections to
// the FastCGI server (opened when needed), one request per connection at a time, records split by
// hand. No routing, no checks, no error handling worth the name: not a gateway to deploy, only the
// least a Node FastCGI gateway can do per request.
// node floor-fastcgi.mjs <socketPath> <docroot> <connections>
import { createServer } from 'node:http'
import { connect } from 'node:net'
import { parseHead } from './floor-head.mjs'

const [socketPath, docroot, connections] = [process.argv[2], process.argv[3], Number(process.argv[4] ?? 4)]
const BEGIN = Buffer.from([1, 1, 0, 1, 0, 8, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0])   // BEGIN_REQUEST id 1, RESPONDER, KEEP_CONN
const END_PARAMS_AND_STDIN = Buffer.from([1, 4, 0, 1, 0, 0, 0, 0, 1, 5, 0, 1, 0, 0, 0, 0])
const idle = []
const waiting = []

// FastCGI 1.0 §3.4: a length < 128 in one byte, else in four with the high bit set.
const len = (n) => n < 128 ? Buffer.from([n]) : Buffer.from([(n >>> 24) | 0x80, (n >> 16) & 255, (n >> 8) & 255, n & 255])

function nameValue (parts, name, value) {
  const v = Buffer.from(value, 'latin1')
  parts.push(len(name.length), len(v.length), Buffer.from(name, 'latin1'), v)
}

let open = 0

/** A new connection for `req`: php-fpm closes one that sends no request within 5 s (measured). */
function connectFor (req, res) {
  open++
  const conn = { socket: connect(socketPath), res: null, buf: null, headDone: false }
  conn.socket.on('data', (chunk) => onData(conn, chunk))
  conn.socket.on('error', () => {})
  conn.socket.on('close', () => {
    open--
    const i = idle.indexOf(conn)
    if (i !== -1) idle.splice(i, 1)
    conn.res?.destroy()
    if (waiting.length > 0) connectFor(...waiting.shift())
  })
  start(conn, req, res)
}

function onData (conn, chunk) {
  let buf = conn.buf === null ? chunk : Buffer.concat([conn.buf, chunk])
  while (buf.length >= 8) {
    const type = buf[1]
    const length = buf.readUInt16BE(4)
    const total = 8 + length + buf[6]
    if (buf.length < total) break
    const content = buf.subarray(8, 8 + length)
    buf = buf.subarray(total)
    if (type === 6 && length > 0) stdout(conn, content)
    else if (type === 3) {
      const res = conn.res
      conn.res = null
      conn.headDone = false
      res.end()
      if (waiting.length > 0) start(conn, ...waiting.shift())
      else idle.push(conn)
    }
  }
  conn.buf = buf.length > 0 ? buf : null
}

function stdout (conn, content) {
  if (conn.headDone) { conn.res.write(content); return }
  // The CGI head arrives in the first record with php: no reassembly across records.
  const end = content.indexOf('\r\n\r\n')
  const { status, headers } = parseHead(content, end)
  conn.headDone = true
  conn.res.writeHead(status, headers)
  if (content.length > end + 4) conn.res.write(content.subarray(end + 4))
}

function start (conn, req, res) {
  conn.res = res
  const q = req.url.indexOf('?')
  const path = q < 0 ? req.url : req.url.slice(0, q)
  const params = []
  nameValue(params, 'GATEWAY_INTERFACE', 'CGI/1.1')
  nameValue(params, 'SERVER_PROTOCOL', `HTTP/${req.httpVersion}`)
  nameValue(params, 'REQUEST_METHOD', req.method)
  nameValue(params, 'REQUEST_URI', req.url)
  nameValue(params, 'QUERY_STRING', q < 0 ? '' : req.url.slice(q + 1))
  nameValue(params, 'SCRIPT_NAME', path)
  nameValue(params, 'SCRIPT_FILENAME', docroot + path)
  nameValue(params, 'DOCUMENT_ROOT', docroot)
  nameValue(params, 'REMOTE_ADDR', req.socket.remoteAddress)
  nameValue(params, 'REMOTE_PORT', String(req.socket.remotePort))
  nameValue(params, 'SERVER_NAME', 'localhost')
  for (let i = 0; i < req.rawHeaders.length; i += 2) nameValue(params, `HTTP_${req.rawHeaders[i].toUpperCase().replace(/-/g, '_')}`, req.rawHeaders[i + 1])
  const body = Buffer.concat(params)
  const header = Buffer.from([1, 4, 0, 1, body.length >> 8, body.length & 255, 0, 0])
  conn.socket.write(Buffer.concat([BEGIN, header, body, END_PARAMS_AND_STDIN]))
}

const server = createServer((req, res) => {
  req.resume()
  const conn = idle.pop()
  if (conn !== undefined) start(conn, req, res)
  else if (open < connections) connectFor(req, res)
  else waiting.push([req, res])
})
server.keepAliveTimeout = 60_000
server.listen(0, '127.0.0.1', () => console.log(`LISTENING ${server.address().port}`))
process.on('SIGTERM', () => process.exit(0))
