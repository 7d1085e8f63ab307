/** Route `options` of the HTTP adapter. */
import { Type, type Static } from '@sinclair/typebox'
import { parseDuration } from '../../config/units.js'
import { DURATION_PATTERN } from '../../config/units.js'
import { schemaIssues } from '../../core/compile.js'
import { ConfigError } from '../../core/errors.js'

export const HttpOptionsSchema = Type.Object({
  connections: Type.Optional(Type.Integer({ minimum: 1, default: 128, description: 'Most connections kept to one backend.' })),
  keepAliveTimeout: Type.Optional(Type.Union([Type.Number({ minimum: 0 }), Type.String({ pattern: DURATION_PATTERN })], { default: '4s', description: 'How long an idle backend connection is kept.' })),
}, { additionalProperties: false })

export interface HttpOptions {
  connections: number
  keepAliveTimeout: number
}

export function parseHttpOptions (raw: unknown, at: string): HttpOptions {
  const issues = schemaIssues(HttpOptionsSchema, raw)
  if (issues.length > 0) throw new ConfigError(issues.map((i) => ({ ...i, path: at + i.path })))
  const o = raw as Static<typeof HttpOptionsSchema>
  return {
    connections: o.connections ?? 128,
    keepAliveTimeout: parseDuration(o.keepAliveTimeout ?? 4000) ?? 4000,
  }
}
