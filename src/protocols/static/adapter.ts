/**
 * The static file adapter (`protocol: static`): files under the route's `docroot`, as nginx `root`
 * or lighttpd mod_staticfile serve them. The core has already resolved the URL path (decoding and
 * its refusals, `..`, dot segments, index files, the directory 301, the symlink policy, the
 * docroot bound: src/core/cgi/script.ts) into `exchange.script`; this adapter refuses what a
 * static server must not hand out (a dot file a symlink leads to, a file used as a directory,
 * other methods), opens the file with the X-Sendfile open (src/core/sendfile.ts:
 * O_NOFOLLOW|O_NONBLOCK, regular files only, checked again on the descriptor), refuses a file the
 * docroot's owner could not read (the proxy may run as root: a hard link to /etc/shadow), and
 * answers GET/HEAD with HTTP validators and byte ranges (several: multipart/byteranges,
 * multipart.ts). With `precompressed`, a `.br` or
 * `.gz` sibling the client accepts is sent instead, opened with the same checks (openSibling).
 *
 * Not here: directory listings, compression on the fly. docs/protocols/static.md.
 */
import { realpathSync, statSync, type Stats } from 'node:fs'
import { STATUS_CODES } from 'node:http'
import { extname, relative, sep } from 'node:path'
import type { Readable } from 'node:stream'
import type etagFn from 'etag'
import type freshFn from 'fresh'
import type mimeTypes from 'mime-types'
import { lazy } from '../../lazy.js'
import { unwatchAbort, watchAbort } from '../../core/abort.js'
import { isInside, resolveScript, type SymlinkPolicy } from '../../core/cgi/script.js'
import { encodePath } from '../../core/cgi/url-path.js'
import { ProxyError, type ErrorCode } from '../../core/errors.js'
import { OneShotClient } from '../../core/one-shot-client.js'
import { closeVerified, FileBody, openFdInsideRoots, readableByOwner } from '../../core/sendfile.js'
import type { ClientContext, Endpoint, Exchange, ProtocolAdapter, RawHeaders, ResponseHandler, ScriptInfo } from '../../core/types.js'
import { parseStaticOptions, type PrecompressedEncoding, type StaticOptions } from './options.js'
import { acceptedEncodings, codedTag, SIBLING_SUFFIX, siblingEntry } from './precompressed.js'
import { parseRanges, RANGE_MALFORMED, RANGE_UNSATISFIABLE, type ByteRange } from './ranges.js'
import { parseHttpDate } from './http-date.js'
import { MAX_RANGES, multipartByteranges } from './multipart.js'

// CommonJS packages, required on first use (src/lazy.ts): a proxy without a static route never loads them.
const etag = lazy<typeof etagFn>('etag')
const fresh = lazy<typeof freshFn>('fresh')
const mime = lazy<typeof mimeTypes>('mime-types')

/** nginx `default_type` as its stock mime.types config sets it. */
const DEFAULT_TYPE = 'application/octet-stream'

/** The one dot directory served (RFC 8615: ACME challenges, security.txt). */
const WELL_KNOWN = '.well-known'

function notFound (detail: string): ProxyError {
  return new ProxyError('ERR_SCRIPT_NOT_FOUND', detail, { phase: 'route' })
}

function forbidden (detail: string): ProxyError {
  return new ProxyError('ERR_SCRIPT_FORBIDDEN', detail, { phase: 'route' })
}

/**
 * A path (relative to the docroot) with a dot segment, but for a leading `.well-known`: `.git`,
 * `.env`, `.htaccess`, `.user.ini` (nginx `location ~ /\.(?!well-known)`).
 */
export function hiddenPath (rel: string): boolean {
  const segs = rel.split(sep)
  for (let i = 0; i < segs.length; i++) {
    if (segs[i].startsWith('.') && !(i === 0 && segs[i] === WELL_KNOWN)) return true
  }
  return false
}

/** An If-Match / If-None-Match list holds `*` or `tag`. `strong`: RFC 9110 §8.8.3.2, a weak tag matches nothing. */
function listMatches (list: string, tag: string, strong: boolean): boolean {
  if (strong && tag.startsWith('W/')) return list.split(',').some((t) => t.trim() === '*')
  return list.split(',').some((t) => { const v = t.trim(); return v === '*' || v === tag })
}

/** node joins repeated unknown fields with `, `: a string, but typed as a list too. */
function headerString (v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v.join(', ') : v
}

/** How long a docroot's real path is reused, as the core's script cache (src/core/route.ts). */
const DOCROOT_CACHE_MS = 1000
const DOCROOT_CACHE_ENTRIES = 64

/** Docroot (as configured) → its real path and identity when it was resolved. */
const docroots = new Map<string, { root: string, dev: number, ino: number, until: number }>()

/**
 * The docroot's real path and its stats now (the owner rule's uid/gid). realpath(3) of the docroot
 * was one readlink per path component on every request; its result is reused for up to a second,
 * but only while it still proves itself, on every request: a stat(2) of the cached real path (which
 * the owner rule needs anyway, so never stale) must find the same directory (dev/ino), and the
 * file's real path must lie inside it. Both hold ⇒ the cached path is the directory's real path
 * now: the file's real path has no symlink in it, so its prefix, the cached path, is a symlink-free
 * path to that directory, and a directory has only one. Anything else (a docroot replaced or
 * moved, a file outside) resolves the docroot again before deciding, so a refusal is always made
 * on a fresh realpath. All that the second of reuse can hide is what the core's own script cache
 * hides as long: after the configured docroot path is re-pointed at another directory, a file of
 * the old directory that a link in the new one leads to (all other checks made as ever on it:
 * it was being served a second before). The new directory's own files are served at once
 * (test/static/static-open-checks.test.ts).
 */
function docrootFor (docroot: string, real: string): { root: string, rootStats: Stats } {
  const hit = docroots.get(docroot)
  if (hit !== undefined && Date.now() < hit.until) {
    const now = statSync(hit.root, { throwIfNoEntry: false })
    if (now !== undefined && now.dev === hit.dev && now.ino === hit.ino && isInside(hit.root, real)) return { root: hit.root, rootStats: now }
  }
  const root = realpathSync.native(docroot)
  const rootStats = statSync(root)
  if (docroots.size >= DOCROOT_CACHE_ENTRIES) docroots.clear()
  docroots.set(docroot, { root, dev: rootStats.dev, ino: rootStats.ino, until: Date.now() + DOCROOT_CACHE_MS })
  return { root, rootStats }
}

/**
 * The route's `symlinks` policy, which the core resolved the file under (ScriptInfo.symlinks).
 * A core that does not say: `deny`, the one answer within every policy.
 */
function symlinkPolicyOf (script: ScriptInfo): SymlinkPolicy {
  const p = script.symlinks
  return p === 'follow' || p === 'owner' ? p : 'deny'
}

/**
 * A sibling that is a symlink passes as the file would: the core's walk (resolveScript, with the
 * route's policy) run on its path under the docroot. Every link on the way is judged as for the
 * file (the directories above are the file's own, checked again), the link itself last: `deny`
 * refuses it; `owner` follows it only to a target of the link's owner; each hop must stay inside
 * the docroot (nothing outside is looked at); it must end at a regular file.
 */
async function linkPasses (path: string, docroot: string, policy: SymlinkPolicy): Promise<boolean> {
  if (policy === 'deny') return false
  const rel = relative(docroot, path)
  if (rel === '' || !isInside(docroot, path)) return false
  try {
    const found = await resolveScript({ docroot, urlPath: encodePath('/' + rel.split(sep).join('/')), rule: {}, symlinks: policy, hideDotSegments: true })
    return found.pathInfo === '' && found.filename === path
  } catch {
    return false
  }
}

function statOrNull (path: string): Stats | null {
  try {
    return statSync(path, { throwIfNoEntry: false }) ?? null
  } catch {
    return null
  }
}

function sameFile (a: Stats | null, b: Stats): boolean {
  return a !== null && a.dev === b.dev && a.ino === b.ino
}

/**
 * The request fields `fresh` reads: If-None-Match with its OWS tabs as spaces (RFC 9110 §5.6.3:
 * OWS is SP or HTAB; `fresh` splits lists at commas and trims spaces only), If-Modified-Since an
 * HTTP-date (parseHttpDate) written as an IMF-fixdate, or left out when it is none (RFC 9110
 * §13.1.3: ignored) or later than now. Never the request's Cache-Control: `fresh` answers "stale"
 * to every `Cache-Control: no-cache` (express's end-to-end reload), but that directive asks caches
 * to revalidate with the origin (RFC 9111 §5.2.1.4), and the origin evaluates the validators as
 * ever: nginx, Apache and lighttpd answer 304 to a matching one (a cache revalidating for a client
 * that sent `no-cache` passes the field on with its own If-None-Match).
 */
function conditionalHeaders (req: Exchange['requestHeaders']): freshFn.Headers {
  const since = parseHttpDate(req['if-modified-since'])
  return {
    'if-none-match': headerString(req['if-none-match'])?.replace(/\t/g, ' '),
    // A date in the future is ignored too (Apache; RFC 2616 §14.25): a client's clock ahead of
    // ours would otherwise get 304 for a file changed after the copy it holds.
    'if-modified-since': Number.isNaN(since) || since > Date.now() ? undefined : new Date(since).toUTCString(),
  }
}

/** The file's mtime in whole seconds (HTTP dates have them): what If-Range and If-Unmodified-Since compare. */
function mtimeSeconds (st: Stats): number {
  return Math.floor(st.mtimeMs / 1000) * 1000
}

/**
 * Last-Modified as sent: the mtime, but never a date later than the answer's `Date` (RFC 9110
 * §8.8.2.1: an origin MUST replace a modification time in the future with the time of the answer;
 * Apache's ap_rationalize_mtime). A file dated ahead of the clock (a wrong clock, an unpacked
 * archive) gets the second before now: node's `Date` field is the current second's cached string,
 * which can trail the clock by an event-loop delay. That date is no validator of the file (If-Range
 * compares the real mtime), so a client that sends it back gets the whole file, never a splice.
 */
function lastModified (st: Stats): number {
  const now = Date.now()
  return st.mtimeMs > now ? Math.floor(now / 1000) * 1000 - 1000 : mtimeSeconds(st)
}

/** One file served; OneShotClient keeps it while it is in flight. */
class StaticExchange {
  private over = false
  /** The open file before its body takes it (closeVerified: a verified regular file). */
  private fd: number | null = null
  private body: Readable | null = null

  constructor (
    private readonly opts: StaticOptions,
    private readonly ex: Exchange,
    private readonly handler: ResponseHandler,
    private readonly done: (x: StaticExchange) => void,
  ) {}

  start (): void {
    watchAbort(this.ex, this.onAbort)
    this.run().catch((err: unknown) => {
      this.fail(err instanceof ProxyError ? err : new ProxyError('ERR_INTERNAL', `static: ${(err as Error)?.message ?? String(err)}`, { cause: err }))
    })
  }

  /** The client went away or the core timed the exchange out: let the file go, report nothing. */
  private readonly onAbort = (): void => {
    if (this.over) return
    this.end()
  }

  /** OneShotClient.destroy (proxy closing): end now and say why. */
  abort (err: ProxyError): void {
    this.fail(err)
  }

  private end (): void {
    this.over = true
    unwatchAbort(this.ex, this.onAbort)
    if (this.body !== null) this.body.destroy()
    else if (this.fd !== null) closeVerified(this.fd)
    this.body = null
    this.fd = null
    this.done(this)
  }

  private fail (err: ProxyError): void {
    if (this.over) return
    this.end()
    this.handler.onError(err)
  }

  private async run (): Promise<void> {
    const ex = this.ex
    const script = ex.script
    if (script === null || script.docroot === '') throw new ProxyError('ERR_INTERNAL', 'a static route needs `docroot`')
    // `/style.css/x`: the core found a file with a PATH_INFO after it; a file is no directory.
    if (script.pathInfo !== '') throw notFound('a file used as a directory')
    if (hiddenPath(relative(script.docroot, script.filename))) throw new ProxyError('ERR_STATIC_HIDDEN', script.name, { phase: 'route' })
    if (ex.method !== 'GET' && ex.method !== 'HEAD') {
      this.answer(405, 'ERR_METHOD_NOT_ALLOWED', ['Allow', 'GET, HEAD'])
      return
    }
    const { fd, stats, real, root, rootStats } = await this.open(script)
    if (this.over) { closeVerified(fd); return }
    this.fd = fd
    // Precompressed siblings: only once the file itself passed every check (a sibling never
    // stands for a missing or refused file), tried in the client's order of preference.
    for (const enc of acceptedEncodings(headerString(ex.requestHeaders['accept-encoding']), this.opts.precompressed)) {
      if (this.over) return
      const sib = await this.openSibling(script.filename + SIBLING_SUFFIX[enc], script, root, rootStats)
      if (sib === null) continue
      if (this.over) { closeVerified(sib.fd); return }
      closeVerified(fd)
      this.fd = sib.fd
      this.respond(script, sib.stats, sib.real, enc)
      return
    }
    if (this.over) return
    this.respond(script, stats, real, null)
  }

  /**
   * A precompressed sibling (`<file>.br`, `<file>.gz`), opened with every check the file itself
   * passed: a symlink only as the route's `symlinks` policy lets the file be one (the core's own
   * walk, resolveScript, run on the sibling's path: `deny` refuses it, `owner` wants the link and
   * its target to have one owner, every mode keeps it inside the docroot, hop by hop), inside the
   * docroot on its real path and on the descriptor, no dot file on the way, a regular file opened
   * O_NOFOLLOW, readable by the docroot's owner. null when there is none or it fails a check: the
   * file itself is sent then, as nginx's gzip_static falls back, so a bad sibling cannot take the
   * file down with it.
   */
  private async openSibling (path: string, script: ScriptInfo, root: string, rootStats: Stats): Promise<{ fd: number, stats: Stats, real: string } | null> {
    const entry = siblingEntry(path)
    if (entry === null) return null
    const link = entry.isSymbolicLink()
    if (!link && !entry.isFile()) return null
    const policy = symlinkPolicyOf(script)
    if (link && !(await linkPasses(path, script.docroot, policy))) return null
    let real: string
    try {
      real = realpathSync.native(path)
    } catch {
      return null
    }
    if (!isInside(root, real) || hiddenPath(relative(root, real))) return null
    let opened: { fd: number, stats: Stats }
    try {
      opened = await openFdInsideRoots(real, [root])
    } catch {
      return null
    }
    const { fd, stats } = opened
    // On the descriptor's own stats, as for the file; and the sibling's name must still be what
    // was checked: the same regular file, or the same link, now leading to the very file opened
    // (with the owner of the link under `owner`), not something swapped in after the checks.
    const now = siblingEntry(path)
    const same = now !== null && now.dev === entry.dev && now.ino === entry.ino && (link
      ? now.isSymbolicLink() && sameFile(statOrNull(path), stats) && (policy !== 'owner' || stats.uid === now.uid)
      : now.isFile() && now.dev === stats.dev && now.ino === stats.ino)
    if (!readableByOwner(rootStats, stats) || !same) {
      closeVerified(fd)
      return null
    }
    return { fd, stats, real }
  }

  /** The file, opened as X-Sendfile opens one: regular, inside the docroot on its real path and on the descriptor. */
  private async open (script: ScriptInfo): Promise<{ fd: number, stats: Stats, real: string, root: string, rootStats: Stats }> {
    // realpath(3) itself, synchronously, as the core's script cache does on a miss
    // (src/core/route.ts), on paths the core's walk just brought into the dentry cache, where the
    // promise version costs a thread-pool round trip each. The file's real path is the core's own
    // (ScriptInfo.realFilename: its cache checked for this request that the path still leads to
    // that file, unchanged; what happens between that check and the open, and a path gone stale
    // under a moved directory, is what the descriptor checks are for); the docroot's is cached
    // (docrootFor).
    let root: string
    let real: string
    let rootStats: Stats
    try {
      real = script.realFilename ?? realpathSync.native(script.filename)
      ;({ root, rootStats } = docrootFor(script.docroot, real))
    } catch {
      throw notFound('no such file')
    }
    if (!isInside(root, real)) throw forbidden('resolves outside the docroot')
    // A link named `style.css` may not hand out `.env`.
    if (hiddenPath(relative(root, real))) throw new ProxyError('ERR_STATIC_HIDDEN', `${script.name} leads to a dot file`, { phase: 'route' })
    try {
      const { fd, stats } = await openFdInsideRoots(real, [root])
      // On the descriptor's own stats: what is sent is what was checked.
      if (!readableByOwner(rootStats, stats)) {
        closeVerified(fd)
        throw forbidden('not readable by the docroot owner')
      }
      return { fd, stats, real, root, rootStats }
    } catch (err) {
      if (err instanceof ProxyError) {
        if (err.code === 'ERR_SENDFILE_FORBIDDEN') throw forbidden(err.message)
        throw err
      }
      const code = (err as NodeJS.ErrnoException).code
      if (code === 'EACCES' || code === 'EPERM') throw forbidden('permission denied')
      if (code === 'EISDIR') throw notFound('a directory')
      throw err
    }
  }

  /**
   * Answer with the open file `st` (`real`): the file itself (`enc` null) or its precompressed
   * sibling, whose own size, mtime (validators) and bytes are sent, with the file's Content-Type.
   */
  private respond (script: ScriptInfo, st: Stats, real: string, enc: PrecompressedEncoding | null): void {
    const req = this.ex.requestHeaders
    const size = st.size
    const plainTag = etag()(st, { weak: true })
    const tag = enc === null ? plainTag : codedTag(plainTag, enc)
    const modified = new Date(lastModified(st)).toUTCString()
    const validators = ['ETag', tag, 'Last-Modified', modified]
    if (this.opts.cacheControl !== null) validators.push('Cache-Control', this.opts.cacheControl)
    // What is sent depends on Accept-Encoding on such a route, whichever representation this is
    // (RFC 9110 §12.5.5): caches must not give one client's gzip to another.
    const vary = this.opts.precompressed.length > 0 ? ['Vary', 'Accept-Encoding'] : []
    validators.push(...vary)

    // RFC 9110 §13.2.2: the preconditions in order.
    const ifMatch = req['if-match']
    if (ifMatch !== undefined) {
      if (!listMatches(ifMatch, tag, true)) { this.answer(412, 'ERR_PRECONDITION_FAILED', vary); return }
    } else {
      // No HTTP-date (RFC 9110 §13.1.4): ignored. So is one in If-Modified-Since (§13.1.3), which
      // `fresh` would read with Date.parse: it gets the date as an IMF-fixdate, or nothing.
      const since = parseHttpDate(req['if-unmodified-since'])
      if (!Number.isNaN(since) && mtimeSeconds(st) > since) { this.answer(412, 'ERR_PRECONDITION_FAILED', vary); return }
    }
    if (fresh()(conditionalHeaders(req), { etag: tag, 'last-modified': modified })) {
      this.head(304, validators)
      this.finishNoBody()
      return
    }

    const type = mime().contentType(extname(script.filename)) || DEFAULT_TYPE
    const headers = ['Content-Type', type, ...validators, 'Accept-Ranges', 'bytes']
    if (enc !== null) headers.push('Content-Encoding', enc)
    let start = 0
    let end = size // exclusive
    let status = 200
    let several: ByteRange[] | null = null
    const range = req.range
    // Range is defined for GET only (RFC 9110 §14.2); If-Range that does not validate means the whole file.
    if (this.ex.method === 'GET' && range !== undefined && this.rangeStillValid(headerString(req['if-range']), tag, st)) {
      const r = parseRanges(size, range)
      if (r === RANGE_UNSATISFIABLE) {
        this.answer(416, 'ERR_RANGE_NOT_SATISFIABLE', ['Content-Range', `bytes */${size}`, ...vary])
        return
      }
      // A malformed one is ignored, as RFC 9110 §14.2 allows. Several: multipart/byteranges, but
      // for a coded sibling (a Content-Encoding would claim the multipart body itself is coded)
      // and above MAX_RANGES parts (CVE-2011-3192): the whole file then.
      if (r !== RANGE_MALFORMED && r.length === 1) {
        start = r[0].start
        end = r[0].end + 1
        status = 206
        headers.push('Content-Range', `bytes ${start}-${end - 1}/${size}`)
      } else if (r !== RANGE_MALFORMED && enc === null && r.length <= MAX_RANGES) {
        several = r
      }
    }
    if (several !== null && this.fd !== null) {
      const multi = multipartByteranges(this.fd, real, size, type, several)
      this.fd = null
      headers[1] = multi.contentType // headers[0] is Content-Type
      headers.push('Content-Length', String(multi.length))
      this.send(multi.body, 206, headers)
      return
    }
    headers.push('Content-Length', String(end - start))
    if (this.ex.method === 'HEAD' || end === start) {
      this.head(status, headers)
      this.finishNoBody()
      return
    }
    const fd = this.fd
    if (fd === null) return
    this.fd = null
    this.send(new FileBody(fd, end, real, start), status, headers)
  }

  /** Stream `body` (it owns the file now) with backpressure after the head. */
  private send (body: Readable, status: number, headers: RawHeaders): void {
    this.body = body
    body.on('data', (chunk: Buffer) => {
      if (!this.over && !this.handler.onData(chunk)) body.pause()
    })
    body.once('end', () => {
      if (this.over) return
      this.body = null
      this.end()
      this.handler.onEnd()
    })
    body.once('error', (err: Error) => {
      this.body = null
      this.fail(new ProxyError('ERR_STATIC_READ', err.message, { cause: err, phase: 'body' }))
    })
    body.pause()
    this.head(status, headers)
    if (!this.over) body.resume()
  }

  /** If-Range (RFC 9110 §13.1.5): an entity tag compares strongly (ours is weak: never), a date exactly. */
  private rangeStillValid (ifRange: string | undefined, tag: string, st: Stats): boolean {
    if (ifRange === undefined) return true
    const v = ifRange.trim()
    if (v.startsWith('"') || v.startsWith('W/')) return !tag.startsWith('W/') && v === tag
    const d = parseHttpDate(v)
    return !Number.isNaN(d) && d === mtimeSeconds(st)
  }

  private head (status: number, headers: RawHeaders): void {
    const body = this.body
    this.handler.onHead(status, headers, { resume: () => { if (body !== null && !body.destroyed) body.resume() } })
  }

  private finishNoBody (): void {
    if (this.over) return
    this.end()
    this.handler.onEnd()
  }

  /** A refusal that needs a header of its own (Allow, Content-Range): the core's error page, written here. */
  private answer (status: number, code: ErrorCode, extra: RawHeaders): void {
    const head = this.ex.method === 'HEAD'
    const text = `${status} ${STATUS_CODES[status] ?? 'Error'}\n${code}\n`
    this.head(status, ['Content-Type', 'text/plain; charset=utf-8', 'Content-Length', String(Buffer.byteLength(text)), 'Cache-Control', 'no-store', ...extra])
    if (!head && !this.over) this.handler.onData(Buffer.from(text))
    this.finishNoBody()
  }
}

/** One exchange per request, nothing pooled: the core's OneShotClient does the bookkeeping. */
export class StaticClient extends OneShotClient<StaticExchange> {
  constructor (endpoint: Endpoint, opts: StaticOptions) {
    super(endpoint, (ex, handler, done) => new StaticExchange(opts, ex, handler, done), (x, err) => x.abort(err))
  }
}

export const staticAdapter: ProtocolAdapter<StaticOptions> = Object.freeze({
  name: 'static',
  capabilities: Object.freeze({
    keepAlive: false,
    multiplex: false,
    upgrade: false,
    // The core resolves `docroot`/`index`/`symlinks` into exchange.script only for cgiEnv adapters.
    cgiEnv: true,
    needsContentLength: false,
    perRequestProcess: false,
    local: true,
  }),
  parseOptions: parseStaticOptions,
  createClient: (endpoint: Endpoint, opts: StaticOptions, _ctx: ClientContext) => new StaticClient(endpoint, opts),
})
