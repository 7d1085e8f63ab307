/**
 * Adapter names (docs/adapters.md, "Registering"): a name is the `protocol:` of a route, so two
 * different adapters under one name, or a custom adapter named like a built-in one, would silently
 * take each other's routes (a library's `registerAdapter({ name: 'http' })` every http route of the
 * process; a custom `fastcgi` the authorizer). Both are refused with a clear error; registering the
 * same adapter object again, or passing a registered one in `adapters`, stays fine.
 */
import t from 'tap'
import { guardLeaks } from '../helpers/leaks.js'
import { scriptedAdapter } from '../helpers/adapters.js'
import { get, proxyServer } from '../helpers/servers.js'
import { ConfigError, createProxy, getAdapter, httpAdapter, registerAdapter, silentLogger, type ProtocolAdapter } from '../../src/index.js'

guardLeaks(t)

function answering (name: string, body: string): ProtocolAdapter {
  return scriptedAdapter(name, (_ex, h, done) => {
    done()
    h.onHead(200, ['content-length', String(body.length)], { resume () {} })
    h.onData(Buffer.from(body))
    h.onEnd()
  })
}

async function rejection (p: Promise<unknown>): Promise<unknown> {
  return p.then(() => null, (e: unknown) => e)
}

t.test('registerAdapter: a second, different adapter under a taken name throws; the first one stays', async (t) => {
  const first = answering('audit-dup', 'first')
  registerAdapter(first)
  registerAdapter(first) // the same object again: a no-op
  t.throws(() => { registerAdapter(answering('audit-dup', 'second')) }, { name: 'TypeError', message: /adapter name "audit-dup" is already registered/ })
  const { url } = await proxyServer(t, { routes: [{ protocol: 'audit-dup', backends: ['127.0.0.1:9'] }] })
  t.equal((await get(`${url}/`)).body.toString(), 'first', 'the first adapter still serves its routes')
})

t.test('registerAdapter: a built-in name throws, and the built-in stays', async (t) => {
  t.throws(() => { registerAdapter(answering('http', 'hijacked')) }, { name: 'TypeError', message: /adapter name "http" is already registered/ })
  t.equal(getAdapter('http')?.capabilities, httpAdapter.capabilities, 'the http adapter is still the built-in one')
  registerAdapter(httpAdapter) // the built-in object itself again: a no-op
})

t.test('createProxy({ adapters }): two different adapters under one name are a ConfigError', async (t) => {
  const err = await rejection(createProxy({
    logger: silentLogger,
    adapters: [answering('audit-twin', 'a'), answering('audit-twin', 'b')],
    routes: [{ protocol: 'audit-twin', backends: ['127.0.0.1:9'] }],
  }))
  t.ok(err instanceof ConfigError, 'a ConfigError')
  t.match((err as ConfigError).issues, [{ path: '/adapters/1', message: /"audit-twin".*\/adapters\/0/ }])
})

t.test('createProxy({ adapters }): a built-in name is a ConfigError, not a silent override', async (t) => {
  for (const name of ['http', 'fastcgi', 'static']) {
    const err = await rejection(createProxy({
      logger: silentLogger,
      adapters: [answering(name, 'hijacked')],
      routes: [{ protocol: 'http', backends: ['127.0.0.1:9'] }],
    }))
    t.ok(err instanceof ConfigError, `${name}: a ConfigError`)
    t.match((err as ConfigError).issues, [{ path: '/adapters/0', message: new RegExp(`"${name}" is already registered`) }], `${name}: at the adapter`)
  }
})

t.test('createProxy({ adapters }): a name no route could use is a ConfigError', async (t) => {
  const err = await rejection(createProxy({ logger: silentLogger, adapters: [answering('Not A Name', 'x')], routes: [{ protocol: 'http', backends: ['127.0.0.1:9'] }] }))
  t.ok(err instanceof ConfigError, 'a ConfigError')
  t.match((err as ConfigError).issues, [{ path: '/adapters/0/name', message: /must match/ }])
})

t.test('createProxy({ adapters }): the registered object itself, or the same object twice, is fine', async (t) => {
  const a = answering('audit-same', 'same')
  registerAdapter(a)
  const { url } = await proxyServer(t, { adapters: [a, a, httpAdapter], routes: [{ protocol: 'audit-same', backends: ['127.0.0.1:9'] }] })
  t.equal((await get(`${url}/`)).body.toString(), 'same')
})

// From JavaScript anything may come: refused by registerAdapter itself, not by the first route that
// used it ("Cannot read properties of null (reading 'name')", "(reading 'local')").
t.test('registerAdapter: what is not an adapter throws a TypeError naming what is missing', async (t) => {
  for (const [what, a, missing] of [
    ['null', null, /got null/],
    ['a name alone', { name: 'audit-bare' }, /no capabilities object, no parseOptions function, no createClient function/],
    ['no capabilities', { ...answering('audit-nocaps', 'x'), capabilities: undefined }, /no capabilities object$/],
  ] as const) {
    t.throws(() => { registerAdapter(a as unknown as ProtocolAdapter) }, { name: 'TypeError', message: missing }, what)
  }
  t.equal(getAdapter('audit-bare'), undefined, 'nothing was registered')
})

t.test('createProxy({ adapters }): an adapter without capabilities is a ConfigError at its index', async (t) => {
  const err = await rejection(createProxy({
    logger: silentLogger,
    adapters: [{ ...answering('audit-nocaps2', 'x'), capabilities: undefined } as unknown as ProtocolAdapter],
    routes: [{ protocol: 'audit-nocaps2', backends: ['127.0.0.1:9'] }],
  }))
  t.ok(err instanceof ConfigError, `a ConfigError: ${String(err)}`)
  t.match((err as ConfigError).issues, [{ path: '/adapters/0', message: /no capabilities object/ }])
})

