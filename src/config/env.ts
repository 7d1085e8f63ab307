/**
 * `${VAR}` and `${VAR:-default}` in string values (the shell/docker-compose forms operators know);
 * `$${` is a literal `${`. Substitution happens per file, before validation, so a value that comes
 * out wrong is reported at the place it was written. An unset variable without a default is an
 * error naming its path, never a silent empty string.
 */
import type { ConfigIssue } from '../core/errors.js'
import { escapeKey } from './locate.js'

const REF = /\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g

export function substituteEnv (value: unknown, env: NodeJS.ProcessEnv, path = ''): { value: unknown, issues: ConfigIssue[] } {
  const issues: ConfigIssue[] = []
  const walk = (v: unknown, at: string): unknown => {
    if (typeof v === 'string') {
      if (!v.includes('${')) return v
      return v.replace(REF, (whole, name: string | undefined, dflt: string | undefined) => {
        if (whole === '$${') return '${'
        const got = env[name as string]
        if (got !== undefined && (got !== '' || dflt === undefined)) return got
        if (dflt !== undefined) return dflt
        issues.push({ path: at, message: `environment variable ${name as string} is not set (write \${${name as string}:-default} for a fallback)`, found: whole, expected: `${name as string} in the environment` })
        return whole
      })
    }
    if (Array.isArray(v)) return v.map((x, i) => walk(x, `${at}/${i}`))
    if (typeof v === 'object' && v !== null) {
      const out: Record<string, unknown> = {}
      for (const [k, x] of Object.entries(v)) {
        const here = `${at}/${escapeKey(k)}`
        // Prototype pollution: `out[k] = ...` with k `__proto__` would set out's prototype and lose
        // the key (a spawn named `__proto__` vanished, an environment block became inherited).
        // The key stays an own property, and is refused here at its path: the schema accepts it
        // wherever a map's keys are names (spawns, tenants, environment, params).
        if (k === '__proto__') issues.push({ path: here, message: 'bad key name "__proto__": no key may be named __proto__ (JavaScript reads it as the object\'s prototype)', found: k, expected: 'another name' })
        Object.defineProperty(out, k, { value: walk(x, here), enumerable: true, writable: true, configurable: true })
      }
      return out
    }
    return v
  }
  return { value: walk(value, path), issues }
}
