/**
 * Building blocks shared by the route and spawn schemas: operator-friendly durations and sizes
 * (a number, or "60s" / "256MiB"), the string-or-list shape YAML users expect for one-or-many, and
 * maps whose keys are checked too.
 */
import { Type, type TSchema, type TString } from '@sinclair/typebox'
import { DURATION_PATTERN, SIZE_PATTERN } from './units.js'

export const Duration = (description: string, dflt?: string) => Type.Union([
  Type.Number({ minimum: 0 }),
  Type.String({ pattern: DURATION_PATTERN }),
], { description: `${description} Duration: milliseconds, or "250ms", "60s", "5m", "1h".`, ...(dflt !== undefined ? { default: dflt } : {}) })

export const Size = (description: string, dflt?: string) => Type.Union([
  Type.Number({ minimum: 0 }),
  Type.String({ pattern: SIZE_PATTERN }),
], { description: `${description} Size: bytes, or "64KiB", "256MiB", "1GiB".`, ...(dflt !== undefined ? { default: dflt } : {}) })

export const StringOrList = (description: string) => Type.Union([Type.String(), Type.Array(Type.String())], { description })

/** Spawn names: they become file names (pid files, `<spawn>.log`) and metric labels. */
export const SPAWN_NAME_PATTERN = '^[A-Za-z0-9_.-]+$'

/**
 * A map (`spawns`, `tenants`, `environment`, ...). TypeBox's Record alone emits `patternProperties`
 * without `additionalProperties: false`, which checks nothing under a key outside the pattern (a
 * spawn named `bad name`, or any key with a line break for a plain string key): such keys are
 * refused here, in the published JSON Schema and in the generated validators alike.
 */
/**
 * An environment variable (route `params`, spawn `environment`): a name on one line without `=` or
 * NUL, a value without NUL. The kernel's environment is NUL-separated `NAME=value` strings: such a variable
 * cannot be passed (node refuses it at spawn time, FastCGI and SCGI have no way to carry it), so
 * it is a config error here rather than a failure on every request or start.
 */
export const VARIABLE_NAME_PATTERN = '^[^\\u0000=\\n\\r\\u2028\\u2029]+$'
export const VARIABLE_VALUE_PATTERN = '^[^\\u0000]*$'

export const StrictRecord = <V extends TSchema>(key: TString, value: V, description: string) =>
  Type.Record(key, value, { additionalProperties: false, description })
