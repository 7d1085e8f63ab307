// npm http-proxy 1.18 (or http-proxy-3 with argv[3] = "3") with a keep-alive agent.
// node http-proxy.mjs <backendPort> [3]
import { Agent, createServer } from 'node:http'

const port = Number(process.argv[2])
const mod = process.argv[3] === '3' ? await import('http-proxy-3') : await import('http-proxy')
const createProxyServer = mod.createProxyServer ?? mod.default.createProxyServer
const agent = new Agent({ keepAlive: true, maxSockets: 64 })
const proxy = createProxyServer({ target: `http://127.0.0.1:${port}`, agent })
proxy.on('error', (_err, _req, res) => { try { res.statusCode = 502; res.end() } catch {} })
const server = createServer((req, res) => proxy.web(req, res))
server.keepAliveTimeout = 60_000
server.listen(0, '127.0.0.1', () => console.log(`LISTENING ${server.address().port}`))
process.on('SIGTERM', () => process.exit(0))
