#!/usr/bin/env node
// The demo's FastCGI backend: a small responder (FastCGI 1.0 spec, fastcgi-archives.github.io),
// started with its listening socket on fd 0 like php-cgi. It keeps connections open when asked
// (FCGI_KEEP_CONN), answers FCGI_GET_VALUES, and serves one request at a time per connection.
import net from 'node:net'
import { listen, page } from './listen.mjs'

const BEGIN = 1, END = 3, PARAMS = 4, STDIN = 5, STDOUT = 6, GET_VALUES = 9, GET_VALUES_RESULT = 10, UNKNOWN_TYPE = 11

function record (type, id, content = Buffer.alloc(0)) {
  const pad = (8 - (content.length % 8)) % 8
  const h = Buffer.alloc(8)
  h.writeUInt8(1, 0); h.writeUInt8(type, 1); h.writeUInt16BE(id, 2); h.writeUInt16BE(content.length, 4); h.writeUInt8(pad, 6)
  return Buffer.concat([h, content, Buffer.alloc(pad)])
}

function lengthOf (n) {
  if (n < 128) return Buffer.from([n])
  const b = Buffer.alloc(4); b.writeUInt32BE((n | 0x80000000) >>> 0); return b
}

function encodePairs (pairs) {
  return Buffer.concat(Object.entries(pairs).flatMap(([k, v]) => [lengthOf(Buffer.byteLength(k)), lengthOf(Buffer.byteLength(v)), Buffer.from(k), Buffer.from(v)]))
}

function decodePairs (buf) {
  const out = {}
  let i = 0
  const len = () => { const b = buf[i]; if (b < 128) { i += 1; return b } const n = buf.readUInt32BE(i) & 0x7fffffff; i += 4; return n }
  while (i < buf.length) {
    const kl = len(); const vl = len()
    out[buf.toString('utf8', i, i + kl)] = buf.toString('utf8', i + kl, i + kl + vl)
    i += kl + vl
  }
  return out
}

function respond (socket, id, req) {
  const p = decodePairs(Buffer.concat(req.params))
  const body = page('FastCGI backend (node)', {
    REQUEST_METHOD: p.REQUEST_METHOD, REQUEST_URI: p.REQUEST_URI, SCRIPT_NAME: p.SCRIPT_NAME,
    SCRIPT_FILENAME: p.SCRIPT_FILENAME, QUERY_STRING: p.QUERY_STRING, 'body bytes': req.stdin,
  })
  const out = Buffer.from(`Status: 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`)
  for (let off = 0; off < out.length; off += 65535) socket.write(record(STDOUT, id, out.subarray(off, off + 65535)))
  socket.write(record(STDOUT, id))
  socket.write(record(END, id, Buffer.alloc(8)))
  if (!req.keepConn) socket.end()
}

function handle (socket) {
  let buf = Buffer.alloc(0)
  const requests = new Map()
  socket.on('error', () => {})
  socket.on('data', (chunk) => {
    buf = Buffer.concat([buf, chunk])
    while (buf.length >= 8) {
      const type = buf[1], id = buf.readUInt16BE(2), clen = buf.readUInt16BE(4), pad = buf[6]
      if (buf.length < 8 + clen + pad) return
      const content = buf.subarray(8, 8 + clen)
      buf = buf.subarray(8 + clen + pad)
      if (type === BEGIN) requests.set(id, { keepConn: (content[2] & 1) === 1, params: [], stdin: 0 })
      else if (type === PARAMS) requests.get(id)?.params.push(Buffer.from(content))
      else if (type === STDIN) {
        const req = requests.get(id)
        if (req === undefined) continue
        if (clen > 0) req.stdin += clen
        else { requests.delete(id); respond(socket, id, req) }
      } else if (type === GET_VALUES) {
        socket.write(record(GET_VALUES_RESULT, 0, encodePairs({ FCGI_MAX_CONNS: '16', FCGI_MAX_REQS: '16', FCGI_MPXS_CONNS: '0' })))
      } else if (id === 0) {
        const c = Buffer.alloc(8); c[0] = type; socket.write(record(UNKNOWN_TYPE, 0, c))
      }
    }
  })
}

listen(net.createServer(handle))
