/**
 * Route `options` of the HTTP adapter. Valid options are checked by generated code
 * (src/config/validators.generated.ts); TypeBox loads only to word the issues of invalid ones.
 * `parseOptions` is synchronous (ProtocolAdapter), so that path takes TypeBox's CommonJS build.
 */
import type * as TypeBox from '@sinclair/typebox'
import type * as TypeBoxValue from '@sinclair/typebox/value'
import { isHttpOptions } from '../../config/validators.generated.js'
import { DURATION_PATTERN, parseDuration } from '../../config/units.js'
import { schemaIssues } from '../../core/compile.js'
import { ConfigError } from '../../core/errors.js'
import { lazy } from '../../lazy.js'

const typebox = lazy<typeof TypeBox>('@sinclair/typebox')
const typeboxValue = lazy<typeof TypeBoxValue>('@sinclair/typebox/value')

/** The options schema, built on demand: by scripts/gen-validators.mjs and for a failed check. */
export function httpOptionsSchema () {
  const { Type } = typebox()
  return Type.Object({
    connections: Type.Optional(Type.Integer({ minimum: 1, default: 128, description: 'Most connections kept to one backend.' })),
    keepAliveTimeout: Type.Optional(Type.Union([Type.Number({ minimum: 0 }), Type.String({ pattern: DURATION_PATTERN })], { default: '4s', description: 'How long an idle backend connection is kept; above 0.' })),
  }, { additionalProperties: false })
}

type HttpOptionsConfig = TypeBox.Static<ReturnType<typeof httpOptionsSchema>>

export interface HttpOptions {
  connections: number
  keepAliveTimeout: number
}

export function parseHttpOptions (raw: unknown, at: string): HttpOptions {
  if (!isHttpOptions(raw)) {
    const issues = schemaIssues(typeboxValue().Value.Errors(httpOptionsSchema(), raw))
    throw new ConfigError(issues.map((i) => ({ ...i, path: at + i.path })))
  }
  const o = raw as HttpOptionsConfig
  const keepAliveTimeout = parseDuration(o.keepAliveTimeout ?? 4000) ?? 4000
  // undici refuses 0 only when it opens its first connection: every request would fail as the
  // backend's fault. Said here instead, at the option's path.
  if (keepAliveTimeout <= 0) {
    throw new ConfigError([{ path: `${at}/keepAliveTimeout`, message: 'must be above 0 (an idle connection is kept at least this long)', found: o.keepAliveTimeout, expected: 'a duration above 0, e.g. 1s' }])
  }
  return { connections: o.connections ?? 128, keepAliveTimeout }
}
