/**
 * proxycore inside a plain node:http server: one route to an HTTP upstream (WebSockets included),
 * everything else answered by the server itself.
 *
 * From the repository root (`npm install` first), with an upstream on 127.0.0.1:3000
 * (TS_NODE_TRANSPILE_ONLY=1 skips ts-node's type check, which can take half a minute before the
 * server starts):
 *
 *   UPSTREAM=127.0.0.1:3000 PORT=8080 TS_NODE_TRANSPILE_ONLY=1 node --import @tapjs/typescript/import examples/node-http/server.ts
 */
import { createServer, type Server, type ServerOptions } from 'node:http'
import type { AddressInfo } from 'node:net'
import { createProxy, type Proxy } from '../../src/index.js'

export async function start (upstream: string, port = 0): Promise<{ server: Server, proxy: Proxy, url: string, close: () => Promise<void> }> {
  const proxy = await createProxy({
    routes: [{ match: { prefix: '/api/' }, protocol: 'http', backends: [upstream], stripPrefix: true }],
  })
  // shouldUpgradeCallback (Node >= 22.21 / 24.9; Node 20 ignores it, and @types/node 20 lacks it,
  // hence the cast): an Upgrade proxycore would not tunnel (`curl --http2`, an Upgrade with a body,
  // an Upgrade to a path no route takes) is served as a plain request instead of refused.
  const server = createServer({ shouldUpgradeCallback: proxy.shouldUpgrade } as ServerOptions, (req, res) => {
    proxy.handler(req, res, () => {
      res.setHeader('content-type', 'text/plain')
      res.end('served by node:http itself\n')
    })
  })
  server.on('upgrade', proxy.upgrade)
  server.on('checkContinue', proxy.checkContinue)
  server.on('clientError', proxy.clientError)
  server.on('connect', proxy.connect)
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve))
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  return {
    server,
    proxy,
    url,
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
