// The undici floor for HTTP: node:http in front, undici's Pool behind it used the way
// src/protocols/http/client.ts uses it (the Pool module alone, pipelining 1, 128 connections,
// keep-alive, undici's timeouts off, the legacy dispatch handler with raw header buffers), and a
// handler that does nothing else: the response head's raw fields go to writeHead as they are
// (hop-by-hop Connection/Keep-Alive dropped), the body is written as it comes, with backpressure.
// No routing, no header hygiene, no timeouts, no error mapping: what separates proxycore from this
// is proxycore's own per-request cost on top of undici; what separates this from floor-http.mjs
// (raw sockets) is undici's. node floor-undici.mjs <backendPort>
import { createServer } from 'node:http'
import { createRequire } from 'node:module'
import { holdLarge } from './floor-head.mjs'

const backendPort = Number(process.argv[2])
const require = createRequire(import.meta.url)
let Pool
try { Pool = require('undici/lib/dispatcher/pool.js') } catch { Pool = require('undici').Pool }

const pool = new Pool(`http://127.0.0.1:${backendPort}`, {
  connections: 128, pipelining: 1, keepAliveTimeout: 4000, keepAliveMaxTimeout: 4000, keepAliveTimeoutThreshold: 500,
  headersTimeout: 0, bodyTimeout: 0,
})

class Handler {
  constructor (req, res) { this.req = req; this.res = res; this.resume = null }
  onConnect () {}
  onHeaders (status, raw, resume) {
    if (status < 200) return true
    this.resume = resume
    const headers = []
    for (let i = 0; i < raw.length; i += 2) {
      const name = raw[i].toString('latin1')
      const n = name.toLowerCase()
      if (n === 'connection' || n === 'keep-alive') continue
      headers.push(name, raw[i + 1].toString('latin1'))
    }
    this.res.writeHead(status, headers)
    return true
  }
  onData (chunk) {
    holdLarge(this.res, chunk)
    if (this.res.write(chunk)) return true
    this.res.once('drain', this.resume)
    return false
  }
  onComplete () { this.res.end() }
  onError () { this.res.destroy() }
}

const server = createServer((req, res) => {
  req.resume()
  const headers = []
  for (let i = 0; i < req.rawHeaders.length; i += 2) {
    if (req.rawHeaders[i].toLowerCase() !== 'connection') headers.push(req.rawHeaders[i], req.rawHeaders[i + 1])
  }
  headers.push('X-Forwarded-For', req.socket.remoteAddress)
  pool.dispatch({ path: req.url, method: req.method, headers, body: null }, new Handler(req, res))
})
server.keepAliveTimeout = 60_000
server.listen(0, '127.0.0.1', () => console.log(`LISTENING ${server.address().port}`))
process.on('SIGTERM', () => process.exit(0))
