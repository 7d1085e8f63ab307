/**
 * `${VAR}` and `${VAR:-default}` in string values (the shell/docker-compose forms operators know);
 * `$${` is a literal `${`. Substitution happens per file, before validation, so a value that comes
 * out wrong is reported at the place it was written. An unset variable without a default is an
 * error naming its path, never a silent empty string.
 */
import type { ConfigIssue } from '../core/errors.js'
import { escapeKey } from './locate.js'

/**
 * Each `$${`, `${NAME}` and `${NAME:-default}` of `s` (default: up to the first `}`), left to right,
 * replaced by `each(whole, name, default)`; `name` is undefined for `$${`. A scan, not the regex
 * /\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g whose replace it equals: that regex
 * looked for a `}` to the end of the string from every `${NAME:-`, O(n²) on an unclosed run
 * (`${A:-` × 50 000 blocked the loader for ~30 s). Here the next `}` is found once and reused.
 */
function replaceRefs (s: string, each: (whole: string, name: string | undefined, dflt: string | undefined) => string): string {
  let out = ''
  let copied = 0
  /** The first `}` at or after where it was last looked for; -1: none left; -2: not looked yet. */
  let close = -2
  for (let i = s.indexOf('$'); i !== -1; i = s.indexOf('$', i)) {
    let end = -1
    let name: string | undefined
    let dflt: string | undefined
    if (s.startsWith('$${', i)) {
      end = i + 3
    } else if (s.charCodeAt(i + 1) === 0x7b /* { */ && isNameStart(s.charCodeAt(i + 2))) {
      let j = i + 3
      while (isNameChar(s.charCodeAt(j))) j++
      if (s.charCodeAt(j) === 0x7d /* } */) {
        end = j + 1
        name = s.slice(i + 2, j)
      } else if (s.startsWith(':-', j)) {
        if (close !== -1 && close < j + 2) close = s.indexOf('}', j + 2)
        if (close !== -1) {
          end = close + 1
          name = s.slice(i + 2, j)
          dflt = s.slice(j + 2, close)
        }
      }
    }
    if (end === -1) { i++; continue }
    out += s.slice(copied, i) + each(s.slice(i, end), name, dflt)
    copied = i = end
  }
  return copied === 0 ? s : out + s.slice(copied)
}

/** [A-Za-z_] */
function isNameStart (c: number): boolean {
  return (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c === 95
}

/** [A-Za-z0-9_] */
function isNameChar (c: number): boolean {
  return isNameStart(c) || (c >= 48 && c <= 57)
}

export function substituteEnv (value: unknown, env: NodeJS.ProcessEnv, path = ''): { value: unknown, issues: ConfigIssue[] } {
  const issues: ConfigIssue[] = []
  const walk = (v: unknown, at: string): unknown => {
    if (typeof v === 'string') {
      if (!v.includes('${')) return v
      return replaceRefs(v, (whole, name, dflt) => {
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
