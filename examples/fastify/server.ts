/**
 * proxycore as Fastify middleware through @fastify/middie: matched requests are proxied (streamed,
 * with backpressure), unmatched ones reach the Fastify routes.
 */
import Fastify from 'fastify'
import middie from '@fastify/middie'
import { createProxy } from '../../src/index.js'

export async function start (upstream: string): Promise<{ url: string, close: () => Promise<void> }> {
  const proxy = await createProxy({
    routes: [{ match: { prefix: '/api/' }, protocol: 'http', backends: [upstream] }],
  })
  const app = Fastify()
  await app.register(middie)
  app.use(proxy.handler)
  app.get('/', async () => ({ from: 'fastify' }))
  app.server.on('upgrade', proxy.upgrade)
  const url = await app.listen({ port: 0, host: '127.0.0.1' })
  return { url, close: async () => { await app.close(); await proxy.close() } }
}
