/**
 * Whole-config validation without starting anything: schema errors (every one, each with path,
 * what was found and what was expected), unknown keys with a did-you-mean, and the cross-field
 * rules of spawns.ts. `proxycore check` and `createProxy` both reach it through check.ts, so they
 * never disagree; check.ts loads it (and TypeBox) only for a config the generated validator rejects.
 */
import type { TSchema } from '@sinclair/typebox'
import { Value } from '@sinclair/typebox/value'
import type { ConfigIssue } from '../core/errors.js'
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

/** TypeBox errors as ConfigIssues: one per path, unknown keys with a suggestion. */
export function shapeIssues (schema: TSchema, value: unknown): ConfigIssue[] {
  const out: ConfigIssue[] = []
  const seen = new Set<string>()
  for (const e of Value.Errors(schema, value)) {
    if (seen.has(e.path)) continue
    seen.add(e.path)
    const s = e.schema as Record<string, unknown>
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
      message: required ? 'required' : e.message === 'Expected union value' ? 'invalid value' : e.message.replace(/^Expected/, 'expected'),
      ...(required ? {} : { found: e.value }),
      expected: describeExpected(s),
    })
  }
  return out
}

export interface ValidateOptions extends CrossFieldOptions {
  /** Schema to check against; createProxy uses a looser one (embedder options ride along). */
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
