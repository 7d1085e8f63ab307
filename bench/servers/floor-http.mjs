// The Node floor for HTTP: node:http in front, raw kept-alive TCP sockets to the backend, the
// response head split by hand, Content-Length bodies only, a large body's reads sent in one
// writev. No routing, no header hygiene, no timeouts, no error handling worth the name: not a
// proxy to deploy, only the least a Node proxy can do per request. node floor-http.mjs <backendPort>
import { createServer } from 'node:http'
import { connect } from 'node:net'
import { holdLarge, parseHead } from './floor-head.mjs'

const backendPort = Number(process.argv[2])
const idle = []

function open () {
  const socket = connect(backendPort, '127.0.0.1')
  socket.setNoDelay(true)
  const conn = { socket, res: null, head: null, left: -1 }
  socket.on('data', (chunk) => onData(conn, chunk))
  socket.on('error', () => {})
  // The backend closes idle kept-alive connections: forget them.
  socket.on('close', () => {
    const i = idle.indexOf(conn)
    if (i !== -1) idle.splice(i, 1)
    conn.res?.destroy()
  })
  return conn
}

function onData (conn, chunk) {
  const res = conn.res
  if (conn.left < 0) {
    conn.head = conn.head === null ? chunk : Buffer.concat([conn.head, chunk])
    const end = conn.head.indexOf('\r\n\r\n')
    if (end < 0) return
    const { status, headers } = parseHead(conn.head, end)
    conn.left = Number(headers['content-length'])
    res.writeHead(status, headers)
    chunk = conn.head.subarray(end + 4)
    conn.head = null
  }
  if (chunk.length > 0) { conn.left -= chunk.length; holdLarge(res, chunk); res.write(chunk) }
  if (conn.left === 0) { conn.left = -1; conn.res = null; idle.push(conn); res.end() }
}

const server = createServer((req, res) => {
  req.resume()
  const conn = idle.pop() ?? open()
  conn.res = res
  let head = `${req.method} ${req.url} HTTP/1.1\r\n`
  for (let i = 0; i < req.rawHeaders.length; i += 2) {
    if (req.rawHeaders[i].toLowerCase() !== 'connection') head += `${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}\r\n`
  }
  conn.socket.write(`${head}X-Forwarded-For: ${req.socket.remoteAddress}\r\n\r\n`, 'latin1')
})
server.keepAliveTimeout = 60_000
server.listen(0, '127.0.0.1', () => console.log(`LISTENING ${server.address().port}`))
process.on('SIGTERM', () => process.exit(0))
