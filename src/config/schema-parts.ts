/**
 * Building blocks shared by the route and spawn schemas: operator-friendly durations and sizes
 * (a number, or "60s" / "256MiB"), and the string-or-list shape YAML users expect for one-or-many.
 */
import { Type } from '@sinclair/typebox'
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
