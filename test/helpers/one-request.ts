/**
 * Source of an ES module, for `node --input-type=module -e`, that starts a node:http backend,
 * puts proxycore (built package at `index`) with one HTTP route in front of it, sends one request
 * through and closes everything; `text` then holds "<status> <body>". `beforeCreate` and
 * `afterCreate` are spliced in around `createProxy()`; the caller appends what it prints.
 */
export function oneRequestThroughProxy (index: string, hooks: { beforeCreate?: string, afterCreate?: string } = {}): string {
  return `
import { createServer, request } from 'node:http'
const { createProxy, silentLogger } = await import(${JSON.stringify(index)})
const backend = createServer((req, res) => res.end('via ' + req.url))
await new Promise((r) => backend.listen(0, '127.0.0.1', r))
${hooks.beforeCreate ?? ''}
const proxy = await createProxy({ logger: silentLogger, routes: [{ protocol: 'http', backends: ['127.0.0.1:' + backend.address().port] }] })
${hooks.afterCreate ?? ''}
const front = createServer(proxy.handler)
await new Promise((r) => front.listen(0, '127.0.0.1', r))
const text = await new Promise((resolve, reject) => {
  request({ host: '127.0.0.1', port: front.address().port, path: '/x', agent: false }, (res) => {
    let body = ''
    res.on('data', (c) => { body += c })
    res.on('end', () => resolve(res.statusCode + ' ' + body))
  }).on('error', reject).end()
})
front.close(); backend.close(); await proxy.close()
`
}
