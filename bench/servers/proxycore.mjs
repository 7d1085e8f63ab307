// proxycore in its own process: node proxycore.mjs <config.json> [module]. The module defaults to
// the compiled package (dist/index.js). `spawns` in the config go to the spawn manager
// (dist/spawn/index.js): pipe spawns become `processStarters` (CGI), socket spawns `sources`.
// Prints LISTENING <port>; SIGTERM closes cleanly (so a --cpu-prof profile gets written).
import { createServer } from 'node:http'
import { readFileSync } from 'node:fs'
import { pathToFileURL } from 'node:url'

const { spawns, ...config } = JSON.parse(readFileSync(process.argv[2], 'utf8'))
const modUrl = process.argv[3] ? pathToFileURL(process.argv[3]) : new URL('../../dist/index.js', import.meta.url)
const mod = await import(modUrl.href)
let manager = null
const extra = {}
if (spawns) {
  const { SpawnManager } = await import(new URL('spawn/index.js', modUrl).href)
  manager = new SpawnManager()
  extra.processStarters = {}
  extra.sources = {}
  for (const [name, spec] of Object.entries(spawns)) {
    manager.add(name, spec)
    if (spec.socketType === 'pipe') extra.processStarters[name] = manager.pipeStarter(name)
    else extra.sources[name] = manager.source(name)
  }
  await manager.start()
}
const proxy = await mod.createProxy({ ...config, ...extra, logger: mod.silentLogger })
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
  const t = setTimeout(() => process.exit(0), 3000)
  proxy.close(500).then(() => manager?.close()).finally(() => { clearTimeout(t); process.exit(0) })
})
