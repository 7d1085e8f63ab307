/**
 * The router: every route's match compiled once at load into one predicate; first match wins,
 * every given field must match (lighttpd's condition blocks, nginx's location order made explicit).
 *
 * Every field is tested against ONE normalised path (`normalizePath`: decoded once, `//` merged,
 * dot-segments resolved), as nginx and lighttpd match locations: `/%61dmin/`, `//admin/` and
 * `/x/../admin/` are all `/admin/`, so no spelling reaches a backend by a route `/admin/` would
 * not choose. Backends still get the client's bytes; only the choice uses the normal form.
 */
import { isIP } from 'node:net'
import type Picomatch from 'picomatch'
import { lazy } from '../lazy.js'
import { normalizePath } from './cgi/url-path.js'
import { ProxyError } from './errors.js'

// CommonJS, so through `require` (src/lazy.ts says why), at the first glob route.
const picomatch = lazy<typeof Picomatch>('picomatch')

export interface RouteMatch {
  /**
   * Exact host, or a leading wildcard `*.example.com` (matches sub.example.com, not example.com);
   * compared as `routeHost` gives it (lower-case, no trailing dot).
   */
  host?: string | string[]
  /** Path prefix; `/api/` matches `/api/x`, and `/api` also matches `/api` exactly. */
  prefix?: string
  /** File extension(s) of the path's last segment (`.php`) — or any segment, see `extensionAnywhere`. */
  extension?: string | string[]
  /** picomatch glob over the normalised path (`/static/**\/*.css`). */
  glob?: string
  /** JavaScript regular expression over the normalised path. */
  regex?: string
  /** Allowed methods (upper-case). */
  methods?: string[]
}

export interface MatchInput {
  /** Host without port, lower-case. */
  host: string
  /**
   * The path (no query). `Router` takes it as received, still percent-encoded, and normalises it;
   * the predicates of `compileMatch` receive the normalised form.
   */
  path: string
  method: string
}

type Predicate = (req: MatchInput) => boolean

export function compileMatch (m: RouteMatch): Predicate {
  const tests: Predicate[] = []
  if (m.host !== undefined) tests.push(hostTest(Array.isArray(m.host) ? m.host : [m.host]))
  if (m.prefix !== undefined) {
    const prefix = m.prefix
    const bare = prefix.endsWith('/') && prefix.length > 1 ? prefix.slice(0, -1) : null
    tests.push((r) => r.path.startsWith(prefix) || r.path === bare)
  }
  if (m.extension !== undefined) {
    const exts = (Array.isArray(m.extension) ? m.extension : [m.extension]).map(normalizeExt)
    // The extension rule looks at every path segment: `/index.php/extra` is a PHP request whose
    // PATH_INFO is `/extra` (the script resolver later proves the file really exists).
    tests.push((r) => {
      const p = r.path.toLowerCase()
      for (const e of exts) {
        const at = p.indexOf(e)
        if (at < 0) continue
        for (let i = at; i >= 0; i = p.indexOf(e, i + 1)) {
          const after = p.charCodeAt(i + e.length)
          if (Number.isNaN(after) || after === 47 /* / */) return true
        }
      }
      return false
    })
  }
  if (m.glob !== undefined) {
    const res = globRegExps(m.glob)
    tests.push(res.length === 1 ? (r) => res[0].test(r.path) : (r) => res.some((re) => re.test(r.path)))
  }
  if (m.regex !== undefined) {
    const re = new RegExp(m.regex)
    tests.push((r) => re.test(r.path))
  }
  if (m.methods !== undefined) {
    const set = new Set(m.methods.map((x) => x.toUpperCase()))
    // GET admits HEAD, as nginx's `limit_except GET` and every framework's GET route: a HEAD is a
    // GET without its body (RFC 9110 §9.3.2), answered by the same backend.
    if (set.has('GET')) set.add('HEAD')
    tests.push((r) => set.has(r.method))
  }
  if (tests.length === 0) return () => true
  if (tests.length === 1) return tests[0]
  return (r) => {
    for (const t of tests) if (!t(r)) return false
    return true
  }
}

/**
 * A route's glob as picomatch regular expressions, any of which matches. picomatch lets `**`
 * match no directory in `/a/**\/x` and `**\/x`, but not after a leading `/`: `/**\/*.php`
 * missed `/index.php` (audit: a `/**\/*.cgi` route let `/run.cgi` fall through to a static
 * catch-all, which sent the script's source). So a leading `/**\/` is also tried as `/`, each in
 * turn (`/**\/**\/x` is also `/**\/x` and `/x`), as a shell's globstar has it.
 */
function globRegExps (glob: string): RegExp[] {
  const out = [picomatch().makeRe(glob, { dot: true })]
  for (let g = glob; g.startsWith('/**/');) {
    g = g.slice(3)
    out.push(picomatch().makeRe(g, { dot: true }))
  }
  return out
}

/**
 * `php`, `.php` and `.PHP` are one extension: the router matches it and the script resolver
 * (compile.ts `scriptExtensions`) requires it in this one form.
 */
export function normalizeExt (e: string): string {
  const x = e.toLowerCase()
  return x.startsWith('.') ? x : `.${x}`
}

/**
 * The host a request is routed on: lower-case, no port, no trailing dot (`A.Example.:8080` is
 * `a.example`, `[::1]:8080` is `[::1]`), an IPv6 literal in its one canonical form (RFC 5952:
 * `[0:0::0001]` is `[::1]`, or another spelling of the address would miss its route). Also the
 * form a route's `match.host` is compared in.
 */
export function hostOnly (h: string): string {
  if (h.charCodeAt(0) === 91 /* [ */) return ipLiteral(h.slice(0, h.indexOf(']') + 1))
  const c = h.indexOf(':')
  const name = (c < 0 ? h : h.slice(0, c)).toLowerCase()
  return name.endsWith('.') ? name.slice(0, -1) : name
}

/**
 * A route's `match.host` entry in the form requests are routed on: `Example.COM.` is
 * `example.com`, a bare IPv6 literal `::1` is `[::1]`. Null when it names a port
 * (`a.example:8080`, `[::1]:80`): ports are not matched, and such an entry matched nothing.
 */
export function routeHost (h: string): string | null {
  const x = isIP(h) === 6 ? `[${h}]` : h
  // A literal is canonicalised (its length may change): only what follows its `]` names a port.
  if (x.charCodeAt(0) === 91 /* [ */) return x.endsWith(']') ? hostOnly(x) : null
  const host = hostOnly(x)
  if (host.length !== (x.endsWith('.') ? x.length - 1 : x.length)) return null
  return host
}

/**
 * `[v6]` in WHATWG URL's serialisation (RFC 5952: lower case, no leading zeros, the longest run
 * of zero groups as `::`). One that is no IPv6 address is only lower-cased.
 */
function ipLiteral (literal: string): string {
  try {
    return new URL(`http://${literal}/`).hostname
  } catch {
    return literal.toLowerCase()
  }
}

function hostTest (hosts: string[]): Predicate {
  const exact = new Set<string>()
  const suffixes: string[] = []
  for (const h of hosts) {
    const x = routeHost(h) ?? h.toLowerCase()
    if (x === '*') return () => true
    if (x.startsWith('*.')) suffixes.push(x.slice(1))
    else exact.add(x)
  }
  return (r) => {
    if (exact.has(r.host)) return true
    for (const s of suffixes) if (r.host.length > s.length && r.host.endsWith(s)) return true
    return false
  }
}

/** First match wins. Generic over what a route carries. */
export class Router<R> {
  private readonly entries: Array<{ test: Predicate, route: R }>
  constructor (routes: Array<{ match: RouteMatch, route: R }>) {
    this.entries = routes.map(({ match, route }) => ({ test: compileMatch(match), route }))
  }

  /**
   * The route for a request whose path is as received. Throws ProxyError when the path cannot be
   * routed at all (see `normalizePath`: 400, or 404 for an encoded slash).
   */
  match (req: MatchInput): R | null {
    const path = normalizePath(req.path)
    const input = path === req.path ? req : { host: req.host, path, method: req.method }
    for (const e of this.entries) if (e.test(input)) return e.route
    return null
  }

  /** `match` for callers that can only refuse: a path that cannot be routed matches no route. */
  find (req: MatchInput): R | null {
    try {
      return this.match(req)
    } catch (err) {
      if (err instanceof ProxyError) return null
      throw err
    }
  }
}

/**
 * Why a `match.regex` could take time exponential in the path's length, or null. V8 backtracks,
 * with no step limit, on a path the client chooses: a group repeated more than once (`*`, `+`,
 * `{n,}`, `{n,m}` with m > 1) whose body itself repeats, alternates or refers back (`(a+)+`,
 * `(a|a)*`, `(x\1)*`) can try exponentially many ways to split the path before it fails (audit:
 * `^/re/(a+)+$` held the event loop 9 s on a 31-byte path). Like safe-regex's star-height test,
 * this also refuses a few that are fast in practice (`(/[a-z]+)+`); those are written without
 * the outer repeat (`^/[a-z/]+$`) or as a glob. A regex that only repeats side by side
 * (`.*\/.*`) is polynomial, not refused (docs/reference/config.md says what to avoid).
 */
export function regexHazard (source: string): string | null {
  interface Frame { repeats: boolean, alternates: boolean, refers: boolean }
  const stack: Frame[] = [{ repeats: false, alternates: false, refers: false }]
  const n = source.length
  /** The quantifier at `i` (its length and whether it can repeat more than once), or null. */
  const quantifier = (i: number): { len: number, many: boolean } | null => {
    const c = source[i]
    let len = 0
    let many = false
    if (c === '*' || c === '+') { len = 1; many = true } else if (c === '?') len = 1
    else if (c === '{') {
      const m = /^\{(\d+)(,(\d*))?\}/.exec(source.slice(i, i + 24))
      if (m === null) return null
      len = m[0].length
      many = m[2] === undefined ? Number(m[1]) > 1 : m[3] === '' || Number(m[3]) > 1
    } else return null
    if (source[i + len] === '?') len++ // lazy
    return { len, many }
  }
  for (let i = 0; i < n; i++) {
    const top = stack[stack.length - 1]
    const c = source[i]
    if (c === '\\') {
      const next = source[i + 1] ?? ''
      if ((next >= '1' && next <= '9') || (next === 'k' && source[i + 2] === '<')) top.refers = true
      i++
    } else if (c === '[') {
      for (i++; i < n && source[i] !== ']'; i++) if (source[i] === '\\') i++
    } else if (c === '(') {
      stack.push({ repeats: false, alternates: false, refers: false })
      // `(?:`, `(?=`, `(?!`, `(?<=`, `(?<!`, `(?<name>`: their `?` is no quantifier.
      if (source[i + 1] === '?') {
        if (source[i + 2] === '<' && source[i + 3] !== '=' && source[i + 3] !== '!') i = Math.max(i, source.indexOf('>', i))
        else i += source[i + 2] === '<' ? 3 : 2
      }
    } else if (c === ')') {
      if (stack.length === 1) continue // unbalanced: new RegExp reports it
      const group = stack.pop() as Frame
      const parent = stack[stack.length - 1]
      const q = quantifier(i + 1)
      if (q !== null && q.many && (group.repeats || group.alternates || group.refers)) {
        const what = group.repeats ? 'repeats' : group.alternates ? 'has alternatives' : 'refers back'
        return `a repeated group that ${what} (${JSON.stringify(source.slice(0, i + 1 + q.len))}…) can backtrack exponentially on a path a client sends`
      }
      parent.repeats ||= group.repeats || q !== null
      parent.alternates ||= group.alternates
      parent.refers ||= group.refers
      if (q !== null) i += q.len
    } else if (c === '|') {
      top.alternates = true
    } else {
      const q = quantifier(i)
      if (q !== null && i > 0) { top.repeats = true; i += q.len - 1 }
    }
  }
  return null
}
