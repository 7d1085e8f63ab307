/**
 * proxycore as Express middleware: requests that match a route are proxied; the rest fall through
 * to the Express routes that follow. `proxy.handler` comes before the body parser: proxycore
 * streams the request body itself, and a body a parser has already read is gone (a proxied POST
 * would get 500 ERR_BODY_CONSUMED). The parser after it still serves the app's own routes.
 *
 * From the repository root (`npm install` first), with an upstream on 127.0.0.1:3000
 * (TS_NODE_TRANSPILE_ONLY=1 skips ts-node's type check, which can take half a minute before the
 * server starts):
 *
 *   UPSTREAM=127.0.0.1:3000 PORT=8080 TS_NODE_TRANSPILE_ONLY=1 node --import @tapjs/typescript/import examples/express/server.ts
 */
import express from 'express'
import { createServer, type Server, type ServerOptions } from 'node:http'
import type { AddressInfo } from 'node:net'
import { createProxy } from '../../src/index.js'

export async function start (upstream: string, port = 0): Promise<{ url: string, close: () => Promise<void> }> {
  const proxy = await createProxy({
    routes: [{ match: { prefix: '/api/' }, protocol: 'http', backends: [upstream] }],
  })
  const app = express()
  app.use(proxy.handler)        // first, and without a mount path (Express would strip it from req.url)
  app.use(express.json())       // after it: parses bodies for the routes below only
  app.get('/', (_req, res) => { res.send('express home') })
  app.post('/echo', (req, res) => { res.json({ parsed: req.body as unknown }) })
  // Not app.listen(): the server is made here to pass shouldUpgradeCallback (Node >= 22.21 / 24.9;
  // Node 20 ignores it, and @types/node 20 lacks it, hence the cast). An Upgrade proxycore would
  // not tunnel (`curl --http2` to an Express route) then reaches the app as a plain request.
  const server: Server = createServer({ shouldUpgradeCallback: proxy.shouldUpgrade } as ServerOptions, app)
  server.on('upgrade', proxy.upgrade)
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve))
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
