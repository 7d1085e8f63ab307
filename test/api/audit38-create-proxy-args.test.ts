/**
 * createProxy called from JavaScript with what its types forbid: the mistake is a ConfigError with
 * its path, before anything starts, not a TypeError from inside the proxy — nor, for a logger
 * without `warn`, an uncaught exception at the first request whose error is logged at that level.
 */
import t from 'tap'
import { createProxy, ConfigError, type CreateProxyOptions, type Logger } from '../../src/index.js'
import { guardLeaks } from '../helpers/leaks.js'

const routes = [{ match: { prefix: '/api/' }, protocol: 'http', backends: ['127.0.0.1:1'] }]

async function refusal (config: unknown): Promise<ConfigError> {
  try {
    const p = await createProxy(config as CreateProxyOptions)
    await p.close(0)
  } catch (err) {
    if (err instanceof ConfigError) return err
    throw new Error(`not a ConfigError: ${String(err)}`, { cause: err })
  }
  throw new Error('createProxy accepted it')
}

for (const [what, config] of [['nothing', undefined], ['null', null], ['a string', 'proxycore.yaml'], ['an array', [routes]]] as const) {
  t.test(`createProxy(${what}): a ConfigError saying what it takes`, async (t) => {
    guardLeaks(t)
    const err = await refusal(config)
    t.same(err.issues.map((i) => i.path), [''], 'one issue, at the root')
    t.match(err.message, /createProxy takes the config object/)
  })
}

const noWarn = { debug () {}, info () {}, error () {} }
for (const [what, logger, missing] of [
  ['an object without warn', noWarn, /no warn\b/],
  ['an empty object', {}, /no debug, info, warn, error\b/],
  ['a function', () => {}, /no debug, info, warn, error\b/],
] as const) {
  t.test(`logger: ${what}: a ConfigError at /logger naming what is missing`, async (t) => {
    guardLeaks(t)
    const err = await refusal({ logger: logger as unknown as Logger, routes })
    t.same(err.issues.map((i) => i.path), ['/logger'])
    t.match(err.message, missing)
  })
}

t.test('logger: console, an object with the four methods, and null (the default) are taken', async (t) => {
  guardLeaks(t)
  for (const logger of [console, { ...noWarn, warn () {} }, null]) {
    const p = await createProxy({ logger: logger as Logger, routes })
    await p.close(0)
  }
  t.pass('accepted')
})

// An embedder's `sources` (a spawn manager of its own): the first request routed to a broken one
// failed inside the pool ("this.source.list is not a function").
for (const [what, source, missing] of [
  ['an empty object', {}, /no list, subscribe, ensure\b/],
  ['one without ensure', { name: 'app', list: () => [], subscribe: () => () => {} }, /no ensure\b/],
  ['null', null, /no list, subscribe, ensure\b/],
] as const) {
  t.test(`sources: ${what}: a ConfigError at /sources/<name>`, async (t) => {
    guardLeaks(t)
    const err = await refusal({ sources: { app: source }, routes: [{ match: { prefix: '/' }, protocol: 'http', spawn: 'app' }] })
    t.same(err.issues.map((i) => i.path), ['/sources/app'])
    t.match(err.message, missing)
  })
}

t.test('sources: not an object is a ConfigError at /sources', async (t) => {
  guardLeaks(t)
  const err = await refusal({ sources: [], routes })
  t.same(err.issues.map((i) => i.path), ['/sources'])
})
