/**
 * Whole-config validation without starting anything: schema errors (every one, each with path,
 * what was found and what was expected), unknown keys with a did-you-mean, and the cross-field
 * rules of spawns.ts. `proxycore check` and `createProxy` both reach it through check.ts, so they
 * never disagree; check.ts loads it (and TypeBox) only for a config the generated validator rejects.
 */
import type { TSchema } from '@sinclair/typebox'
import { Value } from '@sinclair/typebox/value'
import type { ConfigIssue } from '../core/errors.js'
import { escapeKey, pointerSegments } from './locate.js'
import { SPAWN_NAME_PATTERN, VARIABLE_NAME_PATTERN, VARIABLE_VALUE_PATTERN } from './schema-parts.js'
import { OperatorConfigSchema } from './schema.js'
import { crossFieldCheck, type CrossFieldOptions } from './spawns.js'
import { didYouMean } from './suggest.js'
import { DURATION_PATTERN, SIZE_PATTERN } from './units.js'

/** What a schema accepts, in words an operator reads (not TypeBox's "Expected union value"). */
export function describeExpected (s: Record<string, unknown>): string {
  if (s.const !== undefined) return JSON.stringify(s.const)
  if (Array.isArray(s.anyOf)) {
    const parts = (s.anyOf as Array<Record<string, unknown>>).map(describeExpected)
    if (parts.includes('a duration like "60s"')) return 'a duration like "60s", or milliseconds'
    if (parts.includes('a size like "256MiB"')) return 'a size like "256MiB", or bytes'
    return [...new Set(parts)].join(' | ')
  }
  if (s.pattern === DURATION_PATTERN) return 'a duration like "60s"'
  if (s.pattern === SIZE_PATTERN) return 'a size like "256MiB"'
  if (s.pattern === VARIABLE_VALUE_PATTERN) return 'a string without a NUL byte'
  if (typeof s.pattern === 'string') return `a string matching ${s.pattern}`
  if (s.type === 'array') return `a list of ${describeExpected((s.items ?? {}) as Record<string, unknown>)}`
  if (s.type === 'integer' || s.type === 'number') {
    const min = typeof s.minimum === 'number' ? ` >= ${s.minimum}` : ''
    return `${s.type === 'integer' ? 'an integer' : 'a number'}${min}`
  }
  if (s.type === 'object') return 'a mapping'
  if (typeof s.type === 'string') return `a ${s.type}`
  return 'a valid value'
}

function lastSegment (path: string): string {
  return path.slice(path.lastIndexOf('/') + 1).replace(/~1/g, '/').replace(/~0/g, '~')
}

/** What a map calls its keys, by the map's own key in the config. */
const KEY_NOUNS: Record<string, string> = {
  spawns: 'spawn name',
  tenants: 'tenant name',
  environment: 'environment variable name',
  params: 'CGI variable name',
}

/** The rule of a map's key pattern in words: the end of "a spawn name ...", and the expected value. */
function keyRule (pattern: string): { rule: string, expected: string } {
  if (pattern === SPAWN_NAME_PATTERN) return { rule: 'may contain only ASCII letters, digits, "_", "." and "-"', expected: 'ASCII letters, digits, "_", "." and "-"' }
  // TypeBox's pattern for a plain string key: `.` matches anything but a line break.
  if (pattern === '^(.*)$') return { rule: 'must be a single line', expected: 'a single line' }
  if (pattern === VARIABLE_NAME_PATTERN) return { rule: 'must be a single line without "=" or a NUL byte', expected: 'a single line without "=" or NUL' }
  return { rule: `must match ${pattern}`, expected: `a key matching ${pattern}` }
}

/**
 * Every key of the map at `path` that its key pattern refuses (TypeBox reports only the first), each
 * with the issues of its value, so one run names them all.
 */
function badKeyIssues (map: Record<string, unknown>, path: string, value: unknown): ConfigIssue[] {
  let node = value
  for (const seg of pointerSegments(path)) node = typeof node === 'object' && node !== null ? (node as Record<string, unknown>)[seg] : undefined
  if (typeof node !== 'object' || node === null) return []
  const [pattern, valueSchema] = Object.entries(map.patternProperties as Record<string, TSchema>)[0]
  const re = new RegExp(pattern)
  const noun = KEY_NOUNS[lastSegment(path)] ?? 'key'
  const { rule, expected } = keyRule(pattern)
  const out: ConfigIssue[] = []
  for (const [key, v] of Object.entries(node)) {
    if (re.test(key)) continue
    const at = `${path}/${escapeKey(key)}`
    out.push({ path: at, message: `bad ${noun} ${JSON.stringify(key)}: ${/^[aeiou]/.test(noun) ? 'an' : 'a'} ${noun} ${rule}`, found: key, expected })
    for (const i of shapeIssues(valueSchema, v)) out.push({ ...i, path: `${at}${i.path}` })
  }
  return out
}

/** TypeBox errors as ConfigIssues: one per path, unknown keys with a suggestion. */
export function shapeIssues (schema: TSchema, value: unknown): ConfigIssue[] {
  const out: ConfigIssue[] = []
  const seen = new Set<string>()
  for (const e of Value.Errors(schema, value)) {
    if (seen.has(e.path)) continue
    seen.add(e.path)
    const s = e.schema as Record<string, unknown>
    if (e.message === 'Unexpected property' && typeof s.patternProperties === 'object' && s.patternProperties !== null) {
      const issues = badKeyIssues(s, e.path.slice(0, e.path.lastIndexOf('/')), value)
      for (const i of issues) seen.add(i.path)
      out.push(...issues)
      continue
    }
    if (e.message === 'Unexpected property' && typeof s.properties === 'object' && s.properties !== null) {
      const key = lastSegment(e.path)
      const known = Object.keys(s.properties)
      const hint = didYouMean(key, known)
      out.push({
        path: e.path,
        message: `unknown key ${JSON.stringify(key)}${hint !== null ? ` (did you mean ${JSON.stringify(hint)}?)` : ''}`,
        found: key,
        expected: hint ?? `one of ${known.join(', ')}`,
      })
      continue
    }
    const required = /^Expected required property/.test(e.message)
    out.push({
      path: e.path,
      message: required ? 'required' : e.message === 'Expected union value' ? 'invalid value' : s.pattern === VARIABLE_VALUE_PATTERN && typeof e.value === 'string' ? 'a variable value may not contain a NUL byte' : e.message.replace(/^Expected/, 'expected'),
      ...(required ? {} : { found: e.value }),
      expected: describeExpected(s),
    })
  }
  return out
}

export interface ValidateOptions extends CrossFieldOptions {
  /** Schema to check against; createProxy uses EmbedConfigSchema (the file's keys plus the embedder-only ones). */
  schema?: TSchema
}

/**
 * Schema issues, then the cross-field rules over the well-formed parts. This is the TypeBox side:
 * check.ts runs the generated validator first and loads this module only for an invalid config.
 */
export function validateConfig (value: unknown, opts: ValidateOptions = {}): ConfigIssue[] {
  const issues = shapeIssues(opts.schema ?? OperatorConfigSchema, value)
  return [...issues, ...crossFieldCheck(value, issues, opts)]
}
