#!/usr/bin/env node
// One tenant's backend in the multi-tenant example: a node:http app on the socket proxycore hands
// it as fd 0. It reports who it runs as and — on purpose, to show what the OS allows — reads any
// file or connects to any unix socket a request names. Never deploy these two endpoints.
import { createServer } from 'node:http'
import { readFileSync } from 'node:fs'
import { connect } from 'node:net'

const server = createServer((req, res) => {
  const url = new URL(req.url ?? '/', 'http://tenant')
  const target = url.searchParams.get('path') ?? ''
  const refuse = (err) => res.writeHead(403, { 'content-type': 'text/plain' }).end(`${err.code ?? err.message}\n`)
  if (url.pathname === '/read') {
    let data
    try { data = readFileSync(target) } catch (err) { refuse(err); return }
    res.writeHead(200, { 'content-type': 'text/plain' }).end(data)
    return
  }
  if (url.pathname === '/connect') {
    const s = connect(target, () => { s.destroy(); res.writeHead(200, { 'content-type': 'text/plain' }).end('connected\n') })
    s.on('error', refuse)
    return
  }
  res.writeHead(200, { 'content-type': 'application/json' })
  res.end(JSON.stringify({ tenant: process.env.TENANT, uid: process.getuid(), gid: process.getgid(), groups: process.getgroups(), pid: process.pid }) + '\n')
})
server.listen({ fd: 0 })
process.on('SIGTERM', () => { server.close(() => process.exit(0)); server.closeAllConnections() })
