#!/usr/bin/env node
// The demo's SCGI backend: one request per connection, "len:headers\0...," then the body
// (SCGI spec, python.ca/scgi/protocol.txt); answers with a CGI-style head.
import net from 'node:net'
import { listen, page } from './listen.mjs'

function handle (socket) {
  let buf = Buffer.alloc(0)
  let head = null
  let need = 0
  socket.on('error', () => {})
  socket.on('data', (chunk) => {
    buf = Buffer.concat([buf, chunk])
    if (head === null) {
      const colon = buf.indexOf(':')
      if (colon < 0) return
      const len = Number(buf.subarray(0, colon).toString())
      if (buf.length < colon + 1 + len + 1) return
      const fields = buf.subarray(colon + 1, colon + 1 + len).toString('utf8').split('\0')
      head = {}
      for (let i = 0; i + 1 < fields.length; i += 2) head[fields[i]] = fields[i + 1]
      buf = buf.subarray(colon + 1 + len + 1)
      need = Number(head.CONTENT_LENGTH ?? 0)
    }
    if (buf.length < need) return
    const body = page('SCGI backend (node)', {
      REQUEST_METHOD: head.REQUEST_METHOD, REQUEST_URI: head.REQUEST_URI, SCRIPT_NAME: head.SCRIPT_NAME,
      PATH_INFO: head.PATH_INFO, QUERY_STRING: head.QUERY_STRING, 'body bytes': need,
    })
    socket.end(`Status: 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`)
    socket.removeAllListeners('data')
  })
}

listen(net.createServer(handle))
