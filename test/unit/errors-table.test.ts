/**
 * The error table, the code that throws, and docs/reference/errors.md stay in step
 * (fastify's test/internals/errors.test.js habit).
 */
import t from 'tap'
import { readFileSync, readdirSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { ERRORS, ProxyError, statusFor, toProxyError } from '../../src/core/errors.js'

const root = new URL('../../', import.meta.url).pathname

function sources (dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n)
    return statSync(p).isDirectory() ? sources(p) : p.endsWith('.ts') ? [p] : []
  })
}

t.test('every code used in src/ is in the table', async (t) => {
  const used = new Set<string>()
  for (const f of sources(join(root, 'src'))) {
    for (const m of readFileSync(f, 'utf8').matchAll(/'(ERR_[A-Z0-9]+(?:_[A-Z0-9]+)*)'/g)) used.add(m[1])
  }
  t.ok(used.size > 20, `found ${used.size} codes in use`)
  for (const code of used) t.ok(Object.hasOwn(ERRORS, code), `${code} is in ERRORS`)
})

t.test('every entry is complete and maps to a real HTTP status', async (t) => {
  for (const [code, e] of Object.entries(ERRORS)) {
    t.match(code, /^ERR_[A-Z0-9_]+$/)
    t.ok(e.status >= 400 && e.status <= 599, `${code} status ${e.status}`)
    t.ok(e.message.length > 5 && e.action.length > 3, `${code} has a message and an operator action`)
  }
})

t.test('docs/reference/errors.md lists exactly the table, in order', async (t) => {
  const doc = readFileSync(join(root, 'docs/reference/errors.md'), 'utf8')
  const rows = [...doc.matchAll(/^\| `(ERR_[A-Z0-9_]+)` \| (\d+) \| (.*) \| (.*) \|$/gm)]
  t.same(rows.map((r) => r[1]), Object.keys(ERRORS), 'same codes, same order (run `npm run docs:errors`)')
  for (const r of rows) {
    const e = ERRORS[r[1] as keyof typeof ERRORS]
    t.same([Number(r[2]), r[3], r[4]], [e.status, e.message, e.action], `${r[1]} row matches`)
  }
})

t.test('statusFor is the one mapping; lower layers keep their codes', async (t) => {
  t.equal(statusFor(new ProxyError('ERR_CONNECT_TIMEOUT')), 504)
  t.equal(statusFor(new Error('x')), 500)
  const spawnErr = Object.assign(new Error('crash loop'), { code: 'ERR_SPAWN_FAILED' })
  t.equal(toProxyError(spawnErr).code, 'ERR_SPAWN_FAILED')
  t.equal(toProxyError(spawnErr).status, 503)
  t.equal(toProxyError(Object.assign(new Error('x'), { code: 'EWHATEVER' })).code, 'ERR_INTERNAL')
  t.ok(new ProxyError('ERR_CONNECT_REFUSED').retryable)
  t.notOk(new ProxyError('ERR_BACKEND_CLOSED').retryable)
})
