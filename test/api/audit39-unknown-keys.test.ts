/**
 * A misspelt top-level option of createProxy (`rotues`, `maxResponseHeadsize`, `loger`) is a
 * ConfigError at `/<key>` in the operator file's words, with a did-you-mean that knows the
 * embedder-only options too — with spawns (checked before any child starts) and without (where
 * compileProxy alone took it and the proxy ran without the option). It was silently ignored.
 */
import t from 'tap'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createProxy, ConfigError, silentLogger, type CreateProxyOptions } from '../../src/index.js'
import type { ConfigIssue } from '../../src/core/errors.js'
import { childrenOf, guardLeaks } from '../helpers/leaks.js'

const routes = [{ match: { prefix: '/api/' }, protocol: 'http', backends: ['127.0.0.1:1'] }]
const demo = fileURLToPath(new URL('../../examples/demo/backends/', import.meta.url))

/** The issues createProxy refused `config` with; a proxy it made after all is closed first. */
async function issuesOf (config: Record<string, unknown>): Promise<ConfigIssue[]> {
  try {
    const p = await createProxy({ logger: silentLogger, ...config } as unknown as CreateProxyOptions)
    await p.close(0)
  } catch (err) {
    if (err instanceof ConfigError) return err.issues
    throw new Error(`not a ConfigError: ${String(err)}`, { cause: err })
  }
  return []
}

const unknown = (key: string, hint: string): ConfigIssue => ({ path: `/${key}`, message: `unknown key "${key}" (did you mean "${hint}"?)`, found: key, expected: hint })

t.test('without spawns: a misspelt top-level key is refused with a did-you-mean', async (t) => {
  guardLeaks(t)
  t.strictSame(await issuesOf({ routes, maxResponseHeadsize: '1KiB' }), [unknown('maxResponseHeadsize', 'maxResponseHeadSize')])
  t.strictSame(await issuesOf({ routes, trustedProxy: ['10.0.0.1'] }), [unknown('trustedProxy', 'trustedProxies')])
  // The embedder-only names are candidates too, though they never reach the schema check.
  t.strictSame(await issuesOf({ routes, loger: console }), [unknown('loger', 'logger')])
  t.strictSame(await issuesOf({ routes, adapter: [] }), [unknown('adapter', 'adapters')])
  t.strictSame(await issuesOf({ routes, processStarter: {} }), [unknown('processStarter', 'processStarters')])
  const rotues = await issuesOf({ rotues: routes })
  t.strictSame(rotues.find((i) => i.path === '/rotues'), unknown('rotues', 'routes'))
  // A key like no option at all: the list of those createProxy takes, the embedder-only ones included.
  const [far] = await issuesOf({ routes, onRequest: () => {} })
  t.equal(far.path, '/onRequest')
  t.equal(far.message, 'unknown key "onRequest"')
  t.match(far.expected, /^one of .*\broutes\b.*\badapters, sources, processStarters, logger, gc$/)
})

t.test('with spawns: refused before any child starts', async (t) => {
  guardLeaks(t)
  const issues = await issuesOf({
    spawns: { app: { binPath: [process.execPath, join(demo, 'http-app.mjs')], socketName: '127.0.0.1:0' } },
    routes: [{ protocol: 'http', spawn: 'app' }],
    drainTimout: '1s',
  })
  t.strictSame(issues, [unknown('drainTimout', 'drainTimeout')])
  t.same(childrenOf(), [], 'nothing was started')
})

t.test('every option createProxy documents is still taken: the file\'s keys and the embedder-only ones', async (t) => {
  guardLeaks(t)
  t.strictSame(await issuesOf({
    $schema: 'https://example.invalid/proxycore.schema.json',
    routes,
    trustedProxies: ['10.0.0.1'],
    serverName: 'example.test',
    maxResponseHeadSize: '32KiB',
    logLevel: 'warn',
    accessLog: { path: 'stdout' },
    adapters: [],
    sources: {},
    processStarters: {},
    gc: false,
  }), [])
})
