/**
 * `${VAR}` substitution in the config loader (src/config/env.ts) must stay linear. The pattern it
 * used, /\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g, scanned to the end of the string
 * for a `}` from every `${NAME:-` it met: a value of `${A:-` repeated and never closed cost
 * O(n²) — 64 KiB took ~2.6 s, the 256 KiB string below ~40 s of a blocked loader. The scan that
 * replaced it must also substitute exactly what the pattern did: the equivalence checks below
 * compare it with the old pattern on every short string over the characters that matter.
 */
import t from 'tap'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import '../../src/index.js' // registers the built-in adapters, as the CLI does
import { loadConfig } from '../../src/config/load.js'
import { substituteEnv } from '../../src/config/env.js'
import type { ConfigIssue } from '../../src/core/errors.js'
import { tempDir } from '../helpers/tmp.js'

/** The pattern the loader used, as the reference for what a substitution means. */
const OLD_REF = /\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g

/** substituteEnv's rules on one string, done with the old pattern. */
function reference (s: string, env: Record<string, string>): { value: string, issues: ConfigIssue[] } {
  const issues: ConfigIssue[] = []
  if (!s.includes('${')) return { value: s, issues }
  const value = s.replace(OLD_REF, (whole, name: string | undefined, dflt: string | undefined) => {
    if (whole === '$${') return '${'
    const got = env[name as string]
    if (got !== undefined && (got !== '' || dflt === undefined)) return got
    if (dflt !== undefined) return dflt
    issues.push({ path: '/v', message: `environment variable ${name as string} is not set (write \${${name as string}:-default} for a fallback)`, found: whole, expected: `${name as string} in the environment` })
    return whole
  })
  return { value, issues }
}

const ENV = { A: 'a-value', B: '', _1: '$${X}' }

t.test('an unclosed `${A:-` run of 256 KiB loads in linear time', async (t) => {
  t.setTimeout(20_000)
  const payload = '${A:-'.repeat(256 * 1024 / 5)
  // Through the loader, as an operator's file would be read.
  const dir = tempDir(t, 'pc-redos-env-')
  const file = join(dir, 'proxy.json')
  writeFileSync(file, JSON.stringify({ routes: [{ protocol: 'http', backends: ['127.0.0.1:1'], via: payload }] }))
  const r = await loadConfig(file, { env: ENV })
  const routes = r.config.routes as Array<{ via?: string }>
  t.equal(routes[0]?.via, payload, 'nothing closes a reference: the value is kept as written')
  t.same(r.issues.filter((i) => i.path === '/routes/0/via'), [], 'and it is no issue')

  // The same shape with a `}` at the very end: one reference, `${A:-` and the rest its default.
  const closed = substituteEnv({ v: `${payload}}` }, {}, '')
  t.equal((closed.value as { v: string }).v, payload.slice(5), 'the first ${A:- takes everything up to the } as its default')
  t.same(closed.issues, [])
  const unset = substituteEnv({ v: `${'${Z'.repeat(64 * 1024 / 3)}$` }, {}, '')
  t.equal((unset.value as { v: string }).v, `${'${Z'.repeat(64 * 1024 / 3)}$`, 'unclosed ${NAME runs are kept too')
})

t.test('the scan substitutes exactly what the old pattern did', async (t) => {
  // Every string up to 6 characters over the alphabet that builds references, then longer random ones.
  const alphabet = ['$', '{', '}', ':', '-', 'A', 'B', '_', '1', 'x']
  const samples: string[] = []
  const grow = (prefix: string, left: number): void => {
    samples.push(prefix)
    if (left > 0) for (const c of alphabet) grow(prefix + c, left - 1)
  }
  grow('', 5)
  let seed = 0x2545f491
  const rand = (n: number): number => { seed ^= seed << 13; seed ^= seed >>> 17; seed ^= seed << 5; return (seed >>> 0) % n }
  const words = ['${', '$${', '}', ':-', 'A', 'B', '_1', 'Z9', '$', '{', ':', '-', ' ', 'x']
  for (let k = 0; k < 20_000; k++) {
    let s = ''
    for (let n = rand(12); n > 0; n--) s += words[rand(words.length)]
    samples.push(s)
  }
  let differ = 0
  for (const s of samples) {
    const want = reference(s, ENV)
    const got = substituteEnv({ v: s }, ENV, '')
    const value = (got.value as { v: string }).v
    if (value !== want.value || JSON.stringify(got.issues) !== JSON.stringify(want.issues)) {
      if (differ++ < 5) t.fail(`differs on ${JSON.stringify(s)}: ${JSON.stringify({ value, issues: got.issues })} vs ${JSON.stringify(want)}`)
    }
  }
  t.equal(differ, 0, `${samples.length} strings substituted alike`)
  // Spot checks that name the rules.
  const one = (s: string): string => (substituteEnv({ v: s }, ENV, '').value as { v: string }).v
  t.equal(one('$${A}'), '${A}', '$${ is a literal ${')
  t.equal(one('x${A}y${B:-dflt}z'), 'xa-valuey' + 'dflt' + 'z', 'set, and empty with a default')
  t.equal(one('${A:-}'), 'a-value')
  t.equal(one('${C:-a:-b}}'), 'a:-b}', 'the default ends at the first }')
  t.equal(one('${9}'), '${9}', 'not a name: kept as written')
})
