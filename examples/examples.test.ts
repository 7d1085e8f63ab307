/** Every embedding example runs for real: proxied route, fall-through route, clean shutdown. */
import t from 'tap'
import { guardLeaks } from '../test/helpers/leaks.js'
import { backend, get } from '../test/helpers/servers.js'
import { start as startNode } from './node-http/server.js'
import { start as startExpress } from './express/server.js'
import { start as startFastify } from './fastify/server.js'

guardLeaks(t)

for (const [name, start, home] of [
  ['node-http', startNode, /served by node:http itself/],
  ['express', startExpress, /express home/],
  ['fastify', startFastify, /"from":"fastify"/],
] as const) {
  t.test(name, async (t) => {
    const up = await backend(t, (req, res) => res.end(`upstream saw ${req.url}`))
    const app = await start(up.address)
    t.teardown(app.close)
    const proxied = await get(`${app.url}/api/users?id=7`)
    t.equal(proxied.status, 200)
    t.match(proxied.body.toString(), /^upstream saw \/(api\/)?users\?id=7$/)
    const local = await get(`${app.url}/`)
    t.match(local.body.toString(), home, 'unmatched requests fall through')
  })
}
