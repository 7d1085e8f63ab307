// proxycore in its own process: node proxycore.mjs <config.json> [module]. The module defaults to
// the compiled package (dist/index.js). Prints LISTENING <port>; SIGTERM closes cleanly (so a
// --cpu-prof profile gets written).
import { createServer } from 'node:http'
import { readFileSync } from 'node:fs'
import { pathToFileURL } from 'node:url'

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'))
const mod = await import(process.argv[3] ? pathToFileURL(process.argv[3]).href : new URL('../../dist/index.js', import.meta.url).href)
const proxy = await mod.createProxy({ ...config, logger: mod.silentLogger })
const server = createServer(proxy.handler)
server.on('upgrade', proxy.upgrade)
server.keepAliveTimeout = 60_000
server.listen(0, '127.0.0.1', () => console.log(`LISTENING ${server.address().port}`))
let closing = false
process.on('SIGTERM', () => {
  if (closing) return
  closing = true
  server.closeAllConnections?.()
  server.close()
  const t = setTimeout(() => process.exit(0), 2000)
  proxy.close(500).finally(() => { clearTimeout(t); process.exit(0) })
})
