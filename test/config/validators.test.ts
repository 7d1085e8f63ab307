/**
 * src/config/validators.generated.ts is TypeBox's compiler output for the current schemas
 * (regenerated and compared, like the docs pages), and each generated check answers exactly as
 * TypeBox's `Value.Check` on values drawn from the schema itself, with wrong values mixed in at
 * every level: every kind and keyword the schemas use, each pattern with matching and non-matching
 * strings.
 */
import t from 'tap'
import fc from 'fast-check'
import { execFile } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { Kind, type TSchema } from '@sinclair/typebox'
import { Value } from '@sinclair/typebox/value'
import { guardLeaks } from '../helpers/leaks.js'
import { ensureBuilt, root } from '../cli/run.js'
import { EmbedConfigSchema, OperatorConfigSchema, ProxyConfigSchema } from '../../src/config/schema.js'
import { DURATION_PATTERN, SIZE_PATTERN } from '../../src/config/units.js'
import { isEmbedConfig, isHttpOptions, isOperatorConfig, isProxyConfig } from '../../src/config/validators.generated.js'
import { httpOptionsSchema } from '../../src/protocols/http/options.js'

const execFileP = promisify(execFile)

t.test('validators.generated.ts is the generator\'s output for the current schemas', async (t) => {
  guardLeaks(t)
  await ensureBuilt()
  const { stdout } = await execFileP(process.execPath, [join(root, 'scripts', 'gen-validators.mjs'), '--stdout'], { cwd: root, maxBuffer: 16 * 1024 * 1024 })
  const committed = readFileSync(join(root, 'src', 'config', 'validators.generated.ts'), 'utf8')
  t.ok(stdout === committed, 'src/config/validators.generated.ts is up to date (run `npm run gen:validators`)')
})

/** Strings for each pattern the schemas use: some match, some do not. A new pattern needs a row. */
const PATTERN_EXAMPLES: Record<string, string[]> = {
  [DURATION_PATTERN]: ['5s', '250ms', '1.5h', '10', '2 m', '1d', '5 seconds', 's', '-1s', '1.s', ''],
  [SIZE_PATTERN]: ['64KiB', '1gib', '10 MB', '512', '1.5T', 'b', 'KiB', '64 KiBs', '1.5.5M', ''],
  '^/': ['/', '/srv/www', 'srv', '', ' /x'],
  '^SIG[A-Z0-9]+$': ['SIGTERM', 'SIGRTMIN1', 'sigterm', 'TERM', 'SIG'],
  '^[A-Za-z]+$': ['GET', 'purge', 'GET1', '', 'M-SEARCH'],
  '^[A-Za-z0-9_.-]+$': ['php', 'a.b-c_1', 'bad name', '', 'ü', 'a/b'],
  // A plain string key: TypeBox's pattern, and a map refuses a key with a line break.
  '^(.*)$': ['PATH', '', 'a b', 'x=y', 'a\nb', '\r'],
  // Variable names and values (params, environment): no NUL, a name on one line without `=`.
  '^[^\\u0000=\\n\\r\\u2028\\u2029]+$': ['PATH', 'a b', '', 'x=y', 'a\nb', '\r', 'A\u0000B'],
  '^[^\\u0000]*$': ['value', '', 'a=b', 'a\nb', 'v\u0000w'],
  // status.hosts: `*`, a host name, or an IPv6 literal in brackets; no port, scheme or space.
  '^(\\*|[A-Za-z0-9_.-]+|\\[[0-9A-Fa-f:.]+\\])$': ['*', 'proxy.internal', '[::1]', 'proxy.internal:9000', 'http://x', 'a b', '', '**', '[::1]:80'],
}

type Node = TSchema & Record<string, any>

function matching (pattern: string, want: boolean): string[] {
  const all = PATTERN_EXAMPLES[pattern]
  if (all === undefined) throw new Error(`no examples for pattern ${pattern}: add a row to PATTERN_EXAMPLES`)
  const re = new RegExp(pattern)
  return all.filter((e) => re.test(e) === want)
}

/** Random valid values shaped by the schema (optional keys present or not, every union branch). */
function shaped (s: Node): fc.Arbitrary<unknown> {
  switch (s[Kind]) {
    case 'Object': {
      const model = Object.fromEntries(Object.entries(s.properties as Record<string, Node>).map(([k, v]) => [k, shaped(v)]))
      return fc.record(model, { requiredKeys: (s.required ?? []) as string[] })
    }
    case 'Union': return fc.oneof(...(s.anyOf as Node[]).map(shaped))
    case 'Literal': return fc.constant(s.const)
    case 'String': return typeof s.pattern === 'string' ? fc.constantFrom(...matching(s.pattern, true)) : fc.string({ minLength: s.minLength ?? 0, maxLength: 6 })
    case 'Integer': return fc.integer({ min: s.minimum ?? -5, max: (s.minimum ?? -5) + 300 })
    case 'Number': return fc.double({ min: s.minimum ?? -5, max: 1e6, noNaN: true, noDefaultInfinity: true })
    case 'Boolean': return fc.boolean()
    case 'Array': return fc.array(shaped(s.items as Node), { minLength: s.minItems ?? 0, maxLength: (s.minItems ?? 0) + 2 })
    case 'Record': {
      const [pattern, value] = Object.entries(s.patternProperties as Record<string, Node>)[0]
      return fc.dictionary(fc.constantFrom(...matching(pattern, true)), shaped(value), { maxKeys: 2 })
    }
    case 'Unknown': return fc.anything({ maxDepth: 2 })
    default: throw new Error(`no arbitrary for kind ${String(s[Kind])}: add one (and check the generated code handles it)`)
  }
}

/** The smallest valid value of a schema node. */
function example (s: Node): unknown {
  switch (s[Kind]) {
    case 'Object': return Object.fromEntries(((s.required ?? []) as string[]).map((k) => [k, example(s.properties[k] as Node)]))
    case 'Union': return example(s.anyOf[0] as Node)
    case 'Literal': return s.const
    case 'String': return typeof s.pattern === 'string' ? matching(s.pattern, true)[0] : 'x'.repeat(s.minLength ?? 0)
    case 'Integer': case 'Number': return s.minimum ?? 0
    case 'Boolean': return false
    case 'Array': return Array.from({ length: s.minItems ?? 0 }, () => example(s.items as Node))
    case 'Record': case 'Unknown': return {}
    default: throw new Error(`no example for kind ${String(s[Kind])}`)
  }
}

/** Every node of the schema, with a function placing a value there inside an otherwise valid root. */
function sites (s: Node, place: (v: unknown) => unknown, out: Array<{ s: Node, place: (v: unknown) => unknown }> = []): typeof out {
  out.push({ s, place })
  switch (s[Kind]) {
    case 'Object':
      for (const [k, p] of Object.entries(s.properties as Record<string, Node>)) sites(p, (v) => place({ ...(example(s) as object), [k]: v }), out)
      break
    case 'Union': for (const b of s.anyOf as Node[]) sites(b, place, out); break
    case 'Array': sites(s.items as Node, (v) => place([v, ...(example(s) as unknown[]).slice(1)]), out); break
    case 'Record': {
      const [pattern, value] = Object.entries(s.patternProperties as Record<string, Node>)[0]
      for (const key of [...matching(pattern, true), ...matching(pattern, false)]) sites(value, (v) => place({ [key]: v }), out)
      break
    }
  }
  return out
}

const consts = (s: Node): unknown[] => [
  ...(s.const !== undefined ? [s.const] : []),
  ...Object.values((s.properties ?? {}) as Record<string, Node>).flatMap(consts),
  ...Object.values((s.patternProperties ?? {}) as Record<string, Node>).flatMap(consts),
  ...((s.anyOf ?? []) as Node[]).flatMap(consts),
  ...(s.items !== undefined ? consts(s.items as Node) : []),
]

/** Values to put at a node: right and wrong for its own keywords, and the usual wrong types. */
function candidates (s: Node, literals: unknown[]): unknown[] {
  const min = typeof s.minimum === 'number' ? [s.minimum - 1, s.minimum - 0.5, s.minimum, s.minimum + 0.5, s.minimum + 1] : []
  const obj = s[Kind] === 'Object'
    ? [
        { ...(example(s) as object), [`${Object.keys(s.properties as object)[0]}x`]: 1 },
        ...((s.required ?? []) as string[]).map((k) => Object.fromEntries(Object.entries(example(s) as object).filter(([x]) => x !== k))),
      ]
    : []
  const arr = s[Kind] === 'Array' ? [Array.from({ length: Math.max(0, (s.minItems ?? 0) - 1) }, () => example(s.items as Node)), [example(s.items as Node), 1]] : []
  const str = typeof s.pattern === 'string' ? PATTERN_EXAMPLES[s.pattern] : s.minLength !== undefined ? ['', 'x'] : []
  return [
    example(s), ...min, ...obj, ...arr, ...str, ...literals,
    null, undefined, true, 0, -1, 1.5, Number.NaN, Infinity, '', 'x', [], ['x'], {}, { x: 1 }, new Date(0),
  ]
}

const CHECKS: Array<[string, TSchema, (v: unknown) => boolean]> = [
  ['OperatorConfigSchema', OperatorConfigSchema, isOperatorConfig],
  ['EmbedConfigSchema', EmbedConfigSchema, isEmbedConfig],
  ['ProxyConfigSchema', ProxyConfigSchema, isProxyConfig],
  ['httpOptionsSchema()', httpOptionsSchema(), isHttpOptions],
]

for (const [name, schema, check] of CHECKS) {
  t.test(`${name}: the generated check answers as Value.Check`, async (t) => {
    guardLeaks(t)
    const top = schema as Node
    // Each node of the schema, with each right and wrong value, inside an otherwise valid config.
    const literals = [...new Set(consts(top))]
    const count = [0, 0]
    const disagree: string[] = []
    for (const { s, place } of sites(top, (v) => v)) {
      for (const c of candidates(s, literals)) {
        const v = place(c)
        const want = Value.Check(schema, v)
        count[want ? 1 : 0]++
        if (check(v) !== want) disagree.push(JSON.stringify(v))
      }
    }
    t.same(disagree, [], `${count[1]} valid and ${count[0]} invalid values at every node`)
    t.ok(count[0] > 20 && count[1] > 20, 'both answers are common')
    // Random valid configs (optional keys and union branches mixed), and anything at all.
    fc.assert(fc.property(shaped(top), (v) => Value.Check(schema, v) && check(v)), { numRuns: 200 })
    fc.assert(fc.property(fc.anything(), (v) => check(v) === Value.Check(schema, v)), { numRuns: 200 })
  })
}
