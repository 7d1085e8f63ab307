/**
 * proxycore as Fastify middleware through @fastify/middie: matched requests are proxied (streamed,
 * with backpressure), unmatched ones reach the Fastify routes. middie runs the middleware in
 * Fastify's onRequest hook, before Fastify parses any body, so a proxied body arrives untouched and
 * Fastify's own routes still get theirs parsed.
 *
 * From the repository root (`npm install` first), with an upstream on 127.0.0.1:3000
 * (TS_NODE_TRANSPILE_ONLY=1 skips ts-node's type check, which can take half a minute before the
 * server starts):
 *
 *   UPSTREAM=127.0.0.1:3000 PORT=8080 TS_NODE_TRANSPILE_ONLY=1 node --import @tapjs/typescript/import examples/fastify/server.ts
 */
import Fastify from 'fastify'
import middie from '@fastify/middie'
import type { ServerOptions } from 'node:http'
import { createProxy } from '../../src/index.js'

export async function start (upstream: string, port = 0): Promise<{ url: string, close: () => Promise<void> }> {
  const proxy = await createProxy({
    routes: [{ match: { prefix: '/api/' }, protocol: 'http', backends: [upstream] }],
  })
  // `http`: the options fastify hands to http.createServer. shouldUpgradeCallback (Node >= 22.21 /
  // 24.9; Node 20 ignores it, and @types/node 20 lacks it, hence the cast): an Upgrade proxycore
  // would not tunnel (`curl --http2` to a fastify route) reaches fastify as a plain request.
  const app = Fastify({ http: { shouldUpgradeCallback: proxy.shouldUpgrade } as ServerOptions })
  await app.register(middie)
  app.use(proxy.handler)
  app.get('/', async () => ({ from: 'fastify' }))
  app.post('/echo', async (req) => ({ parsed: req.body }))
  app.server.on('upgrade', proxy.upgrade)
  const url = await app.listen({ port, host: '127.0.0.1' })
  return { url, close: async () => { await app.close(); await proxy.close() } }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { url } = await start(process.env.UPSTREAM ?? '127.0.0.1:3000', Number(process.env.PORT ?? 8080))
  console.log(`listening on ${url}; /api/* -> ${process.env.UPSTREAM ?? '127.0.0.1:3000'}`)
}
