/**
 * A route compiled once at load: its match, pool, admission, timeouts, and the per-protocol
 * preparation of an exchange (forwarded headers for HTTP-speaking backends; body spooling, script
 * resolution and the RFC 3875 environment for the CGI family).
 */
import type { IncomingMessage } from 'node:http'
import { realpathSync, statSync, type Stats } from 'node:fs'
import { join, relative } from 'node:path'
import { Transform, type Readable } from 'node:stream'
import { Admission } from './admission.js'
import type { AuthorizerSettings } from './authorizer.js'
import { spoolBody } from './body-spool.js'
import { buildCgiEnv } from './cgi/env.js'
import { fixedScript, resolveScript, type SymlinkPolicy } from './cgi/script.js'
import { encodePath, normalizePath } from './cgi/url-path.js'
import { ProxyError } from './errors.js'
import { forwardRequestHeaders, type ForwardOptions, type ResponseRewrite } from './headers.js'
import type { BackendPool } from './pool.js'
import type { ProxyExchange } from './exchange.js'
import { hostOnly } from './router.js'
import { RouteStats } from './stats.js'
import type { ProtocolAdapter, RawHeaders, ScriptInfo } from './types.js'

/** How long a resolved script is trusted without a new lstat walk, and how many are kept per route. */
const SCRIPT_CACHE_MS = 1000
const SCRIPT_CACHE_ENTRIES = 4096

export interface RouteTimeouts {
  connect: number, headers: number, idle: number, clientIdle: number, tunnel: number
  /** Bytes per second a request body must keep up with on average (0 = none), past `uploadGrace` ms. */
  minUploadRate: number, uploadGrace: number
}

export interface CgiRouteSettings {
  docroot: string | null
  scriptFilename: string | null
  extensions: string[] | undefined
  index: string[] | undefined
  symlinks: SymlinkPolicy
  params: Record<string, string> | undefined
  passAuthorization: boolean
}

export interface Prepared {
  body?: Readable | null
  length?: number | null
  cleanup?: () => Promise<void>
  script?: ScriptInfo
  env?: Record<string, string>
}

export interface RouteSettings {
  name: string
  index: number
  adapter: ProtocolAdapter
  adapterOptions: unknown
  pool: BackendPool
  timeouts: RouteTimeouts
  retries: number
  maxConcurrent: number
  queue: number
  queueTimeout: number
  maxBodySize: number
  spoolLimit: number
  /**
   * Read the whole request body (memory, then an unlinked temp file, up to spoolLimit) before the
   * backend is contacted (nginx fastcgi_request_buffering). Only ever true for `cgiEnv` adapters.
   */
  requestBuffering: boolean
  prefix: string | null
  stripPrefix: boolean
  hostHeader: string
  xForwarded: boolean
  forwarded: boolean
  via: string
  cgi: CgiRouteSettings | null
  /** Re-process CGI `Location: /path` responses inside this route (default off). */
  localRedirects: boolean
  /** X-Sendfile: real paths of the allowed roots, or null when off. */
  sendfileRoots: string[] | null
  /** FastCGI authorizer asked before the real handler (FastCGI 1.0 §6.3), or null. */
  authorizer: AuthorizerSettings | null
  serverSoftware: string
  serverName: string | undefined
  /** Is this socket peer a trusted proxy? */
  peerTrusted: (peer: string) => boolean
}

export class CompiledRoute {
  readonly name: string
  readonly adapter: ProtocolAdapter
  readonly adapterOptions: unknown
  readonly pool: BackendPool
  readonly admission: Admission
  readonly timeouts: RouteTimeouts
  readonly retries: number
  readonly stats = new RouteStats()
  readonly cgi: CgiRouteSettings | null
  readonly prepare: ((ex: ProxyExchange) => Promise<Prepared>) | null
  readonly authorizer: AuthorizerSettings | null
  private readonly rewrite: ResponseRewrite | null
  /** forwardRequestHeaders' options, made once: [for a peer that is not a trusted proxy, for one that is]. */
  private readonly forwardOptions: readonly [ForwardOptions, ForwardOptions]

  constructor (readonly s: RouteSettings) {
    this.name = s.name
    this.adapter = s.adapter
    this.adapterOptions = s.adapterOptions
    this.pool = s.pool
    this.timeouts = s.timeouts
    this.retries = s.retries
    this.cgi = s.cgi
    this.authorizer = s.authorizer
    this.admission = new Admission(s.maxConcurrent, s.queue, s.queueTimeout, this.stats)
    const forward = { host: s.hostHeader, xForwarded: s.xForwarded, forwarded: s.forwarded, via: s.via }
    this.forwardOptions = [{ ...forward, peerTrusted: false }, { ...forward, peerTrusted: true }]
    const caps = s.adapter.capabilities
    this.prepare = caps.needsContentLength || s.cgi !== null ? (ex) => this.prepareCgi(ex) : null
    // Location/Set-Cookie mapping is for HTTP upstreams that see the path without the prefix; CGI
    // scripts see the client's own path (SCRIPT_NAME) and answer in its terms.
    // The backend's `/x` is the client's `<prefix>/x`: a prefix written without its slash (`/app`)
    // is joined with one, or `Location: /x` would come back as `/appx`. The prefix is matched
    // decoded (`/café/`): Location and a cookie Path get it percent-encoded, as a URL has it.
    this.rewrite = s.stripPrefix && s.prefix !== null && !caps.cgiEnv
      ? { prefix: encodePath(s.prefix.endsWith('/') ? s.prefix : `${s.prefix}/`), upstreamPrefix: '/', backendAuthorities: [], clientHost: '', via: s.via }
      : s.via !== '' ? { prefix: null, upstreamPrefix: '/', backendAuthorities: [], clientHost: '', via: s.via } : null
  }

  /** Does this exchange need the asynchronous preparation step? */
  needsBodyPrepare (ex: ProxyExchange): boolean {
    if (ex.redirects > 0) return false
    const h = ex.req.headers
    if (h['transfer-encoding'] !== undefined) return this.adapter.capabilities.needsContentLength || this.s.requestBuffering
    return this.s.requestBuffering && h['content-length'] !== undefined && h['content-length'] !== '0'
  }

  /** The request body as the client framed it. Throws 413 when over maxBodySize. */
  requestBody (ex: ProxyExchange): { body: Readable | null, length: number | null } {
    if (ex.redirects > 0) return { body: null, length: null }
    const h = ex.req.headers
    if (h['transfer-encoding'] !== undefined) {
      // Spooled bodies (CGI, SCGI) stop at the spool's limit; a streamed one is counted on its way.
      const counted = this.s.maxBodySize > 0 && !this.adapter.capabilities.needsContentLength && !this.s.requestBuffering
      return { body: counted ? limitBody(ex, this.s.maxBodySize) : ex.req, length: null }
    }
    const cl = h['content-length']
    if (cl === undefined) return { body: null, length: null }
    const length = Number(cl)
    if (this.s.maxBodySize > 0 && length > this.s.maxBodySize) throw new ProxyError('ERR_BODY_TOO_LARGE', `${length} bytes`, { phase: 'route' })
    return { body: length === 0 ? null : ex.req, length }
  }

  forwardHeaders (ex: ProxyExchange): RawHeaders {
    return forwardRequestHeaders(ex.req, ex.client, ex.peer, this.forwardOptions[this.s.peerTrusted(ex.peer) ? 1 : 0], false)
  }

  /**
   * The URL the backend sees: with stripPrefix, the route prefix replaced by `/` (nginx
   * `proxy_pass http://b/;`), the query kept (`/api?x=1` → `/?x=1`). The client's bytes are kept
   * when they spell the prefix literally; a request the router chose this route for by its
   * normalised path only (`/%61pi/x`, `//api/x`, and every request of a prefix a client can only
   * send percent-encoded: `/café/`, `/a b/`) gets the rest of that decoded path, encoded again, as
   * nginx does (audit: a prefix with such characters was never stripped).
   */
  upstreamUrl (url: string): string {
    const p = this.s.prefix
    if (!this.s.stripPrefix || p === null) return url
    const q = url.indexOf('?')
    const path = q < 0 ? url : url.slice(0, q)
    const rest = afterPrefix(path, p) ?? restOfNormalized(path, p)
    if (rest === null) return url
    return (rest.startsWith('/') ? rest : `/${rest}`) + (q < 0 ? '' : url.slice(q))
  }

  /**
   * The backend names itself in absolute `Location` URLs and cookie `Domain`s by its own address
   * or by the Host it was sent (`preserve`: the client's; a literal `hostHeader`: that name), so
   * all of them map back to the client's view.
   */
  responseRewrite (ex: { readonly req: IncomingMessage }): ResponseRewrite | null {
    if (this.rewrite === null || this.rewrite.prefix === null) return this.rewrite
    const b = ex.req.headers.host ?? ''
    const authorities = this.pool.backends.map((x) => x.endpoint.id.toLowerCase())
    const sent = this.s.hostHeader === 'preserve' ? b : this.s.hostHeader === 'backend' ? '' : this.s.hostHeader
    if (sent !== '') authorities.push(sent.toLowerCase())
    return { ...this.rewrite, clientHost: hostOnly(b), backendAuthorities: authorities }
  }

  /**
   * Script resolution walks the docroot with lstat/realpath: the dominant cost of a FastCGI request
   * (~40% of CPU measured). Like lighttpd's stat cache, a successful resolution is reused for
   * SCRIPT_CACHE_MS; failures are never cached, and a deleted script stops resolving within that
   * second. A hit is trusted only while the script's path still leads to the very file the walk
   * checked, unchanged since: the same device, inode and change time, one stat(2). A script (or a
   * directory above it) swapped for a symlink to another file, which `symlinks: deny|owner` or the
   * docroot bound would refuse, sends the request through the whole walk again (audit: for up to a
   * second it ran the link's target). What a hit cannot see is a directory above the script moved
   * away and linked back in, leading to that same unchanged file: for the rest of the second the
   * file the walk approved still runs. realpath(3) on each hit saw that too, but glibc's walks the
   * path with a readlink(2) per component: 12-28 µs of CPU per FastCGI request measured, about all
   * of proxycore's distance to the Node floor there (bench/syscalls.mjs, bench/ab.mjs).
   */
  private readonly scriptCache = new Map<string, { script: ScriptInfo, file: FileIdentity, until: number }>()

  private cachedScript (path: string): ScriptInfo | null {
    const hit = this.scriptCache.get(path)
    if (hit === undefined) return null
    if (hit.until < Date.now() || !leadsTo(hit.script.filename, hit.file)) { this.scriptCache.delete(path); return null }
    return hit.script
  }

  /**
   * The script is handed on with the real path found here (ScriptInfo.realFilename). The file's
   * identity is taken before its realpath and must be the real path's own after it: a swap between
   * the two is not cached, so an entry's identity is that of a file its real path reached.
   */
  private remember (path: string, script: ScriptInfo): ScriptInfo {
    const file = identityOf(script.filename)
    const real = realpathOrNull(script.filename)
    if (real === null) return script
    const withReal: ScriptInfo = { ...script, realFilename: real }
    // Under `owner` every link of a chain was judged by its owner, and a hit sees only where the
    // chain ends: a link re-owned, or swapped for another user's link to the same file, would pass
    // for the cache's second. A resolution that went through a link below the docroot (its path
    // there is not the real one) is not kept; a docroot that is itself a link still is.
    if (script.symlinks === 'owner' && real !== join(realpathOrNull(script.docroot) ?? '', relative(script.docroot, script.filename))) return withReal
    if (file === null || !leadsTo(real, file)) return withReal
    if (this.scriptCache.size >= SCRIPT_CACHE_ENTRIES) this.scriptCache.clear()
    this.scriptCache.set(path, { script: withReal, file, until: Date.now() + SCRIPT_CACHE_MS })
    return withReal
  }

  /**
   * The script is resolved before the body is spooled: a 404/403 must not first read (and write to
   * disk) up to spoolLimit bytes, and a failure after spooling must not lose the spool's fd.
   * Resolution needs only the path, never the body's length; the environment needs both.
   *
   * The body is spooled when its length is unknown (chunked) and the adapter needs it, and, with
   * `requestBuffering`, whatever its framing: the backend is contacted only once the whole body is
   * here, so a client that goes away mid-upload never runs the script on a short body, and a slow
   * upload holds no backend worker (nginx fastcgi_request_buffering, lighttpd's default). A
   * Content-Length over spoolLimit is refused before a byte is read, as a chunked body is once it
   * passes it: streamed instead, it would hand a slow client the worker buffering exists to spare.
   */
  private async prepareCgi (ex: ProxyExchange): Promise<Prepared> {
    const out: Prepared = {}
    const cgi = this.cgi
    const script = cgi !== null && this.adapter.capabilities.cgiEnv ? await this.scriptFor(ex, cgi) : null
    let length = ex.contentLength
    const spool = ex.body !== null && (length === null ? this.adapter.capabilities.needsContentLength || this.s.requestBuffering : this.s.requestBuffering && length > 0)
    if (spool && ex.body !== null) {
      const byMaxBody = this.s.maxBodySize > 0 && this.s.maxBodySize <= this.s.spoolLimit
      const max = byMaxBody ? this.s.maxBodySize : this.s.spoolLimit
      if (length !== null && length > max) throw new ProxyError('ERR_BODY_TOO_LARGE', `${length} bytes, over ${max} (spoolLimit)`, { phase: 'route' })
      const spooled = await spoolBody(ex.body, { maxBytes: max, limitName: byMaxBody ? 'maxBodySize' : 'spoolLimit', signal: ex.signal })
      out.body = spooled.body
      out.length = length = spooled.length
      out.cleanup = spooled.cleanup
    }
    if (cgi === null || script === null) return out
    out.script = script
    try {
      out.env = this.cgiEnv(ex, cgi, script, length)
    } catch (err) {
      await out.cleanup?.()
      throw err
    }
    return out
  }

  private async scriptFor (ex: ProxyExchange, cgi: CgiRouteSettings): Promise<ScriptInfo> {
    if (cgi.docroot === null) return fixedScript({ scriptFilename: cgi.scriptFilename ?? '', prefix: (this.s.prefix ?? '').replace(/\/$/, ''), urlPath: ex.path })
    return this.cachedScript(ex.path) ?? this.remember(ex.path, await resolveScript({
      docroot: cgi.docroot,
      urlPath: ex.path,
      rule: { ...(cgi.extensions ? { extensions: cgi.extensions } : {}), ...(cgi.index ? { index: cgi.index } : {}) },
      symlinks: cgi.symlinks,
      // A static route answers a dot path before the walk: no 301 or error code tells it exists.
      ...(this.adapter.capabilities.local === true ? { hideDotSegments: true } : {}),
      ...(this.s.stripPrefix && this.s.prefix !== null ? { prefix: this.s.prefix.replace(/\/$/, '') } : {}),
    }))
  }

  private cgiEnv (ex: ProxyExchange, cgi: CgiRouteSettings, script: ScriptInfo, length: number | null): Record<string, string> {
    return buildCgiEnv({
      method: ex.method,
      url: ex.url,
      path: ex.path,
      query: ex.query,
      httpVersion: ex.httpVersion,
      headers: ex.requestHeaders,
      rawHeaders: ex.redirects > 0 ? withoutBodyHeaders(ex.req.rawHeaders) : ex.req.rawHeaders,
      client: ex.client,
      script,
      serverSoftware: this.s.serverSoftware,
      ...(this.s.serverName !== undefined ? { defaultServerName: this.s.serverName } : {}),
      // A declared `Content-Length: 0` is a body of zero bytes: CONTENT_LENGTH=0 (lighttpd does the same).
      contentLength: length,
      passAuthorization: cgi.passAuthorization,
      ...(cgi.params !== undefined || ex.redirectedFrom !== null ? { params: redirectParams(cgi.params, ex) } : {}),
    })
  }
}

/** The path after a route prefix (`/api/` also takes `/api`, as the router does), or null outside it. */
function afterPrefix (path: string, prefix: string): string | null {
  if (path.startsWith(prefix)) return path.slice(prefix.length)
  return prefix.length > 1 && prefix.endsWith('/') && path === prefix.slice(0, -1) ? '' : null
}

/**
 * What follows `prefix` in the router's form of `path` (decoded, as the prefix was matched),
 * encoded again; null outside the prefix or when the path cannot be normalised.
 */
function restOfNormalized (path: string, prefix: string): string | null {
  let normal: string
  try { normal = normalizePath(path) } catch { return null }
  const rest = afterPrefix(normal, prefix)
  return rest === null ? null : encodePath(rest)
}

/** RFC 3875 §6.2.2 re-processing: REDIRECT_* come from proxy state only, after operator params. */
function redirectParams (params: Record<string, string> | undefined, ex: ProxyExchange): Record<string, string> {
  const from = ex.redirectedFrom
  if (from === null) return params ?? {}
  return { ...params, REDIRECT_STATUS: '200', REDIRECT_URL: from.path, REDIRECT_QUERY_STRING: from.query }
}

/** A local redirect is a GET without body: drop what described the original body. */
function withoutBodyHeaders (raw: string[]): string[] {
  const out: string[] = []
  for (let i = 0; i < raw.length; i += 2) {
    const n = raw[i].toLowerCase()
    if (n === 'content-length' || n === 'content-type' || n === 'transfer-encoding') continue
    out.push(raw[i], raw[i + 1])
  }
  return out
}

/**
 * A streamed chunked request body, counted on its way (a Content-Length one is checked up front):
 * past `max` bytes the exchange fails with 413 ERR_BODY_TOO_LARGE, or is cut if the response has
 * begun, as nginx's client_max_body_size does. The client's stream is unpiped, not destroyed, so
 * the 413 can still be written on its socket; the backend's request is aborted by the failure.
 */
function limitBody (ex: ProxyExchange, max: number): Readable {
  const source = ex.req
  let seen = 0
  const counted = new Transform({
    transform (chunk: Buffer, _encoding, done) {
      seen += chunk.length
      if (seen <= max) { done(null, chunk); return }
      source.unpipe(counted)
      done()
      ex.onError(new ProxyError('ERR_BODY_TOO_LARGE', `over ${max} bytes`, { phase: 'request' }))
    },
  })
  counted.on('error', () => {}) // the consumer (the adapter) has its own listener while it reads
  source.once('error', (err) => counted.destroy(err))
  return source.pipe(counted)
}

/**
 * realpath(3) itself, synchronously, on paths the walk just brought into the dentry cache (a
 * readlink(2) per component, a few µs), where the promise version costs a thread-pool round trip
 * (the bench measured FastCGI CPU per request up by a third with it). Only on a cache miss.
 */
function realpathOrNull (path: string): string | null {
  try { return realpathSync.native(path) } catch { return null }
}

/** What says a path still leads to the same, unchanged file: a rename or a write changes ctime. */
interface FileIdentity { readonly dev: number, readonly ino: number, readonly ctimeMs: number }

/** stat(2) of a path, synchronously (one system call, symlinks followed), or undefined. */
function statOrUndefined (path: string): Stats | undefined {
  try {
    return statSync(path, { throwIfNoEntry: false })
  } catch {
    return undefined
  }
}

/** A path's file, kept to compare later: a cache miss's only allocation of it. */
function identityOf (path: string): FileIdentity | null {
  const st = statOrUndefined(path)
  return st === undefined ? null : { dev: st.dev, ino: st.ino, ctimeMs: st.ctimeMs }
}

/** Whether `path` leads to the file `b` still: compared on the stats, nothing kept (every hit). */
function leadsTo (path: string, b: FileIdentity): boolean {
  const st = statOrUndefined(path)
  return st !== undefined && st.dev === b.dev && st.ino === b.ino && st.ctimeMs === b.ctimeMs
}
