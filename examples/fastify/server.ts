/**
 * proxycore as Fastify middleware through @fastify/middie: matched requests are proxied (streamed,
 * with backpressure), unmatched ones reach the Fastify routes.
 *
 *   UPSTREAM=127.0.0.1:3000 PORT=8080 node --import <ts loader> examples/fastify/server.ts
 */
import Fastify from 'fastify'
import middie from '@fastify/middie'
import { createProxy } from '../../src/index.js'

export async function start (upstream: string, port = 0): Promise<{ url: string, close: () => Promise<void> }> {
  const proxy = await createProxy({
    routes: [{ match: { prefix: '/api/' }, protocol: 'http', backends: [upstream] }],
  })
  const app = Fastify()
  await app.register(middie)
  app.use(proxy.handler)
  app.get('/', async () => ({ from: 'fastify' }))
  app.server.on('upgrade', proxy.upgrade)
  const url = await app.listen({ port, host: '127.0.0.1' })
  return { url, close: async () => { await app.close(); await proxy.close() } }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { url } = await start(process.env.UPSTREAM ?? '127.0.0.1:3000', Number(process.env.PORT ?? 8080))
  console.log(`listening on ${url}; /api/* -> ${process.env.UPSTREAM ?? '127.0.0.1:3000'}`)
}
