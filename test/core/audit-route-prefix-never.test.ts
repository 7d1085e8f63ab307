/**
 * Audit: routes are matched on the normalised path (`//` merged, `.` and `..` resolved), so a
 * `match.prefix` with an empty, `.` or `..` segment (`/api//v1/`, `/a/./b/`, `/a/../b/`) can
 * never match: such a route loaded and silently took no request, each one falling through to the
 * routes after it (often a catch-all). It is a config error now, naming the field.
 */
import t from 'tap'
import { ConfigError, createProxy, silentLogger } from '../../src/index.js'
import { guardLeaks } from '../helpers/leaks.js'
import { get, proxyServer, backend } from '../helpers/servers.js'

guardLeaks(t)

t.test('a prefix no normalised path can start with is refused at load', async (t) => {
  for (const prefix of ['/api//v1/', '//api/', '/a/./b/', '/a/../b/', '/./', '/../', '/./a']) {
    const err = await createProxy({ logger: silentLogger, routes: [{ protocol: 'http', backends: ['127.0.0.1:1'], match: { prefix } }] }).then(async (p) => { await p.close(0); return null }, (e: unknown) => e)
    t.ok(err instanceof ConfigError, `${prefix} refused`)
    const issue = (err as ConfigError | null)?.issues[0]
    t.equal(issue?.path, '/routes/0/match/prefix', `${prefix}: the issue names the field`)
    t.match(issue?.message ?? '', /normalised|never/, `${prefix}: the issue says why`)
  }
})

t.test('prefixes a normalised path can start with still load and route', async (t) => {
  const b = await backend(t, (req, res) => { res.end(req.url) })
  const prefixes = ['/', '/api/', '/api', '/a/.well-known/', '/a/.x', '/a/..x/', '/a.', '/a/...', '/a/.hidden', '/a/.', '/a/..']
  const { url } = await proxyServer(t, { routes: prefixes.map((prefix) => ({ protocol: 'http', backends: [b.address], match: { prefix } })).reverse() })
  const r = await get(`${url}/a/..x/y`)
  t.equal(r.status, 200, 'a segment that only starts with dots is a name')
  t.equal(r.body.toString(), '/a/..x/y')
})
