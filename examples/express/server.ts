/**
 * proxycore as Express middleware: requests that match a route are proxied; the rest fall through
 * to the Express routes that follow.
 *
 *   UPSTREAM=127.0.0.1:3000 PORT=8080 node --import <ts loader> examples/express/server.ts
 */
import express from 'express'
import type { Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { createProxy } from '../../src/index.js'

export async function start (upstream: string, port = 0): Promise<{ url: string, close: () => Promise<void> }> {
  const proxy = await createProxy({
    routes: [{ match: { prefix: '/api/' }, protocol: 'http', backends: [upstream] }],
  })
  const app = express()
  app.use(proxy.handler)
  app.get('/', (_req, res) => { res.send('express home') })
  const server: Server = await new Promise((resolve) => { const s = app.listen(port, '127.0.0.1', () => resolve(s)) })
  server.on('upgrade', proxy.upgrade)
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: async () => {
      server.closeAllConnections()
      await new Promise<void>((resolve) => server.close(() => resolve()))
      await proxy.close()
    },
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { url } = await start(process.env.UPSTREAM ?? '127.0.0.1:3000', Number(process.env.PORT ?? 8080))
  console.log(`listening on ${url}; /api/* -> ${process.env.UPSTREAM ?? '127.0.0.1:3000'}`)
}
