/** FastCGI route options: defaults, validation with paths, and the docs table kept in step. */
import t from 'tap'
import { readFileSync } from 'node:fs'
import { ConfigError } from '../../src/core/errors.js'
import { fastcgiAdapter } from '../../src/protocols/fastcgi/index.js'
import { FASTCGI_DEFAULTS } from '../../src/protocols/fastcgi/options.js'

t.test('defaults for undefined/null/{}', async (t) => {
  t.same(fastcgiAdapter.parseOptions(undefined, '/routes/0/options'), FASTCGI_DEFAULTS)
  t.same(fastcgiAdapter.parseOptions(null, '/x'), FASTCGI_DEFAULTS)
  t.same(fastcgiAdapter.parseOptions({}, '/x'), FASTCGI_DEFAULTS)
  t.same(fastcgiAdapter.parseOptions({ maxConnections: 4, keepConn: false, multiplex: false }, '/x'),
    { ...FASTCGI_DEFAULTS, maxConnections: 4, keepConn: false, multiplex: false })
})

t.test('every problem reported with its path', async (t) => {
  const err = t.throws(() => fastcgiAdapter.parseOptions({ maxConnections: 0, idleTimeout: 'x', bogus: 1, keepConn: 'yes' }, '/routes/2/options')) as unknown as ConfigError
  t.ok(err instanceof ConfigError)
  t.same(err.issues.map((i) => i.path).sort(), ['/routes/2/options/bogus', '/routes/2/options/idleTimeout', '/routes/2/options/keepConn', '/routes/2/options/maxConnections'])
  const notObj = t.throws(() => fastcgiAdapter.parseOptions([1], '/o')) as unknown as ConfigError
  t.equal(notObj.issues[0].path, '/o')
  const mpx = t.throws(() => fastcgiAdapter.parseOptions({ keepConn: false, multiplex: true }, '/o')) as unknown as ConfigError
  t.equal(mpx.issues[0].path, '/o/multiplex')
})

t.test('capabilities', async (t) => {
  t.same(fastcgiAdapter.capabilities, { keepAlive: true, multiplex: true, upgrade: false, cgiEnv: true, needsContentLength: true, perRequestProcess: false })
  t.equal(fastcgiAdapter.name, 'fastcgi')
})

t.test('docs/protocols/fastcgi.md lists every option with its default', async (t) => {
  const doc = readFileSync(new URL('../../docs/protocols/fastcgi.md', import.meta.url), 'utf8')
  for (const [key, value] of Object.entries(FASTCGI_DEFAULTS)) {
    t.match(doc, new RegExp(`\\| \`${key}\` \\| \`${String(value)}\` \\|`), key)
  }
})
