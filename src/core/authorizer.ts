/**
 * The FastCGI Authorizer role (FastCGI 1.0 §6.3, lighttpd `mode = "authorizer"`): before a route's
 * real handler runs, the request's environment — without its body — goes to an authorizer. A 200
 * lets the request through, and the authorizer's `Variable-NAME: value` headers become NAME=value in
 * the real handler's CGI environment, for the names AUTHORIZER_NAME allows and only where that
 * environment has no such variable yet (mergeAuthorizerVariables). Any other answer is what the
 * client gets, body included.
 */
import { buildCgiEnv } from './cgi/env.js'
import { ProxyError, backendOverloaded, toProxyError } from './errors.js'
import { filterResponseHeaders, validStatus } from './headers.js'
import { RequestFacts } from './request-facts.js'
import { RESTART_GRACE_MS, spawnWaitDeadline, waitReplacement, waitRoutable } from './spawn-wait.js'
import { StaticSource, isFailedAttempt, type BackendPool, type Backend } from './pool.js'
import type { Authorizable } from './exchange.js'
import type { Exchange, FlowControl, RawHeaders, ResponseHandler, ScriptInfo } from './types.js'

export interface AuthorizerSettings {
  readonly pool: BackendPool
  readonly adapterOptions: unknown
  /** SCRIPT_FILENAME for the authorizer (a PHP script, say); '' for a dedicated authorizer app. */
  readonly scriptFilename: string
  /** ms until the authorizer must have answered. */
  readonly timeout: number
  readonly serverSoftware: string
}

export type AuthResult = { allowed: true, variables: Record<string, string> } | { allowed: false, status: number }

/** FastCGI 1.0 §6.3: an Authorizer gets the request's variables except these. */
const NOT_FOR_AUTHORIZER = ['CONTENT_LENGTH', 'CONTENT_TYPE', 'PATH_INFO', 'PATH_TRANSLATED', 'SCRIPT_NAME']
const VARIABLE = /^variable-(.+)$/i
/**
 * The names an authorizer may set (an allow-list; `Variable-X-User-Id` is X_USER_ID). FastCGI 1.0
 * §6.3 passes every Variable-*, but an authorizer that turns request data (a token's claims) into
 * names could then hand the responder PATH, LD_PRELOAD, PHP_VALUE, PERL5OPT or GIT_PROJECT_ROOT,
 * and no deny-list knows every variable a loader or interpreter reads. Allowed:
 * - REMOTE_USER and AUTH_TYPE, which RFC 3875 (§4.1.11, §4.1.1) leaves to authentication;
 * - the authorizer's own names: AUTH* (the spec's AUTH_METHOD, httpd mod_authnz_fcgi's AUTHN_* and
 *   AUTHZ_*) and X_*.
 * No CGI meta-variable the server computes is among them, and mergeAuthorizerVariables never
 * replaces a variable the environment already has (route `params` included).
 */
export const AUTHORIZER_NAME = /^(?:REMOTE_USER|AUTH[A-Z0-9_]*|X_[A-Z0-9_]+)$/

/**
 * Add an allowed authorizer's variables to a responder environment. A name the environment already
 * has, in any case (the operator's `params` may be lower case), is left as it is: the operator and
 * the server decide before the authorizer does.
 */
export function mergeAuthorizerVariables (env: Record<string, string>, variables: Readonly<Record<string, string>>): void {
  const taken = new Set<string>()
  for (const name in env) taken.add(name.toUpperCase())
  for (const [name, value] of Object.entries(variables)) {
    if (AUTHORIZER_NAME.test(name) && !taken.has(name)) env[name] = value
  }
}

export async function authorize (main: Authorizable, a: AuthorizerSettings): Promise<AuthResult> {
  // A spawned authorizer may start on demand, exactly as the route's own pool does, and is waited
  // for as long as it may take to answer (at least 1 s): then 503 ERR_SPAWN_NOT_READY.
  if (a.pool.backends.length === 0 && !main.signal.aborted) {
    await waitRoutable(a.pool, main.signal, Date.now() + Math.max(a.timeout, 1000), Date.now, () => main.signal.aborted)
  }
  return await new Promise((resolve, reject) => {
    const ax = new AuthExchange(main, a, resolve, reject)
    ax.start()
  })
}

/**
 * Whether a failed authorization may go to another authorizer backend, as the route's own exchanges
 * fail over (exchange.ts onError) and nginx's auth_request subrequest does (proxy_next_upstream
 * error): its connect failed (or FCGI_OVERLOADED: `retryable`, nothing ran), or its connection was
 * reset or closed before any byte of its answer (`unanswered`). An authorization has no body
 * (FastCGI 1.0 §6.3) and decides nothing until it is answered, so sending it again does no harm,
 * whatever the client's method. Never after a head, the `timeout` or the client's leaving (onError).
 */
function resendable (err: ProxyError): boolean {
  return err.retryable || (err.unanswered && (err.code === 'ERR_BACKEND_RESET' || err.code === 'ERR_BACKEND_CLOSED'))
}

class AuthExchange extends RequestFacts implements Exchange, ResponseHandler {
  readonly headers: RawHeaders = []
  readonly env: Record<string, string>
  readonly script: ScriptInfo
  readonly body = null
  readonly contentLength = null
  readonly role = 'authorizer' as const
  readonly signal: AbortSignal
  private readonly ac = new AbortController()
  private backend: Backend | null = null
  /** The backends this authorization failed on and went past (failover, onError). */
  private tried: Set<Backend> | null = null
  /** The failure of the last attempt, for when no backend is left to try. */
  private lastError: ProxyError | null = null
  /** Until when a failed attempt may wait for a spawn's restarted process (awaitRestart); set at the first attempt. */
  private deadline = Infinity
  /** The number of attempts (`tried.size`) when the authorization last waited for a restart. */
  private restartWaitedAt = -1
  private variables: Record<string, string> = {}
  private state: 'waiting' | 'allowed' | 'denying' | 'done' = 'waiting'
  private status = 0
  private timer: NodeJS.Timeout | null = null
  private drain: (() => void) | null = null
  /** Why abortWith() aborted the authorizer request (a timeout, a bad head, the client leaving). */
  private abortReason: ProxyError | null = null

  constructor (
    private readonly main: Authorizable,
    private readonly a: AuthorizerSettings,
    private readonly resolve: (r: AuthResult) => void,
    private readonly reject: (err: ProxyError) => void,
  ) {
    super(main.id, main, main.req, main.client, `${main.routeName}:authorizer`, a.adapterOptions)
    this.signal = this.ac.signal
    // §6.3: the authorizer gets no SCRIPT_NAME and no PATH_INFO, so nothing of the path is decoded
    // for it: an `http` route forwards `/a%2Fb` or `/x/../y` as the router normalised them, and
    // the authorizer's verdict, not the CGI walk's rules, decides about them.
    this.script = { filename: a.scriptFilename, name: '', pathInfo: '', docroot: '' }
    const env = buildCgiEnv({
      method: main.method, url: main.url, path: main.path, query: main.query, httpVersion: main.httpVersion,
      headers: main.requestHeaders, rawHeaders: main.req.rawHeaders, client: main.client, script: this.script,
      serverSoftware: a.serverSoftware, contentLength: null, passAuthorization: true,
    })
    for (const k of NOT_FOR_AUTHORIZER) delete env[k]
    this.env = env
  }

  start (): void {
    // The client leaving aborts the authorization too.
    this.main.signal.addEventListener('abort', this.onMainAbort, { once: true })
    this.dispatch()
  }

  /**
   * Send the authorization to a backend not tried yet. Not at all once the client is gone (it may
   * have left while a spawned authorizer was starting, or between two attempts): its 'abort' came
   * before the listener, and nobody waits for the verdict.
   */
  private dispatch (): void {
    if (this.main.signal.aborted) {
      this.settle(new ProxyError('ERR_CLIENT_ABORTED', undefined, { phase: 'head' }))
      return
    }
    const pool = this.a.pool
    const b = pool.pick({ url: this.url, client: this.client.address }, this.tried)
    if (b === null) {
      if (this.mayAwaitRestart()) { this.awaitRestart(); return }
      pool.noneUsable()
      // Every backend was tried: the last real failure says more than "none left".
      this.settle(this.lastError ?? new ProxyError('ERR_NO_BACKEND', `authorizer pool ${pool.name}`, { phase: 'connect' }))
      return
    }
    this.backend = b
    pool.started(b)
    // One deadline for the whole authorization, from its first attempt: a failover does not re-arm it.
    if (this.tried === null) {
      this.deadline = spawnWaitDeadline(Date.now(), this.a.timeout)
      this.arm()
    }
    b.client.dispatch(this, this)
  }

  /**
   * The last attempt's process may be gone (its connect refused or failed, its connection reset or
   * closed before any answer) and no backend not tried yet is listed: a spawned authorizer's
   * process that died is replaced by a new backend, which the authorization waits for as the
   * route's own requests do (exchange.ts mayAwaitRestart / waitForRestart). Not for a fixed
   * `backends:` list (its entries stay the same backends), and once per attempt.
   */
  private mayAwaitRestart (): boolean {
    const last = this.lastError
    if (last === null || this.tried === null || this.restartWaitedAt === this.tried.size || this.main.signal.aborted) return false
    if (this.a.pool.source instanceof StaticSource) return false
    // Not a full listen queue (EAGAIN): that process is alive, only busy.
    if (last.code === 'ERR_CONNECT_FAILED') return !backendOverloaded(last)
    return last.code === 'ERR_CONNECT_REFUSED' || last.code === 'ERR_BACKEND_RESET' || last.code === 'ERR_BACKEND_CLOSED'
  }

  /**
   * Wait (waitReplacement) for the process a spawn starts in place of the failed one, then send the
   * authorization to it; within the authorization's one deadline (`timeout` from its first attempt,
   * at least 1 s, as spawnWaitDeadline bounds a route's wait; the timer keeps running meanwhile).
   * A failed process still listed RESTART_GRACE_MS later is alive, and no wait ends in time: the
   * authorization fails with the last attempt's error, as it did at once before.
   */
  private awaitRestart (): void {
    const pool = this.a.pool
    const tried = this.tried as Set<Backend>
    this.restartWaitedAt = tried.size
    const now = Date.now()
    const stop = (): boolean => this.state !== 'waiting' || this.ac.signal.aborted || this.main.signal.aborted
    const noReplacement = (): void => {
      pool.noneUsable()
      this.settle(this.lastError as ProxyError)
    }
    waitReplacement(pool, [...tried], tried, this.ac.signal, Math.min(now + RESTART_GRACE_MS, this.deadline), this.deadline, Date.now, stop).then((found) => {
      if (stop() || this.backend !== null) return
      if (found) this.dispatch()
      else noReplacement()
    }, (err: unknown) => {
      if (stop() || this.backend !== null) return
      if (toProxyError(err).code === 'ERR_SPAWN_NOT_READY') noReplacement()
      else this.settle(toProxyError(err))
    })
  }

  private readonly onMainAbort = (): void => { this.abortWith(new ProxyError('ERR_CLIENT_ABORTED', undefined, { phase: 'head' })) }

  /**
   * `timeout` bounds the authorizer's whole answer, not only its head: one that sent its head and
   * then went silent held the request (and, denying, the client's connection) for as long as it
   * stayed silent (a php-cgi script that flushes and sleeps: 30 s past a 1 s timeout). Until the
   * verdict is complete (a 200's end) the deadline counts from the start; a denial being streamed
   * to the client gets `timeout` per silence, never while it waits for the client to read.
   */
  private arm (): void {
    if (this.timer !== null) { clearTimeout(this.timer); this.timer = null }
    // Not once the answer is over: a client's 'drain' may come after the denial ended.
    if (this.a.timeout > 0 && this.state !== 'done') this.timer = setTimeout(this.timedOut, this.a.timeout)
  }

  private readonly timedOut = (): void => {
    this.timer = null
    // Out of time while waiting for a restarted process (awaitRestart): the last attempt's failure.
    if (this.state === 'waiting' && this.backend === null && this.lastError !== null) { this.abortWith(this.lastError); return }
    this.abortWith(this.state === 'waiting'
      ? new ProxyError('ERR_HEADERS_TIMEOUT', 'authorizer', { phase: 'head' })
      : new ProxyError('ERR_BODY_TIMEOUT', 'authorizer answer not complete', { phase: 'body' }))
  }

  onHead (status: number, headers: RawHeaders, flow: FlowControl, statusText?: string): void {
    if (this.state !== 'waiting') return
    if (!validStatus(status)) { this.abortWith(new ProxyError('ERR_BAD_RESPONSE', `authorizer status ${status}`, { phase: 'head' })); return }
    // Any valid head shows the authorizer alive, a refusal too (passive health, as exchange.ts onHead).
    if (this.backend !== null) this.a.pool.answered(this.backend)
    this.status = status
    if (status === 200) {
      // The timer of the head keeps running: the verdict is complete at the answer's end.
      for (let i = 0; i < headers.length; i += 2) {
        const m = VARIABLE.exec(headers[i])
        if (m === null) continue
        const name = m[1].toUpperCase().replace(/-/g, '_')
        if (AUTHORIZER_NAME.test(name)) this.variables[name] = headers[i + 1]
      }
      this.state = 'allowed'
      return
    }
    // Denied: the authorizer's answer is the client's answer (Variable-* stays internal).
    this.state = 'denying'
    const out: string[] = []
    const filtered = filterResponseHeaders(headers, status, null, this.httpVersion)
    for (let i = 0; i < filtered.length; i += 2) if (!VARIABLE.test(filtered[i])) out.push(filtered[i], filtered[i + 1])
    const res = this.main.res
    try {
      if (statusText !== undefined && statusText !== '') res.writeHead(status, statusText, out)
      else res.writeHead(status, out)
    } catch (err) {
      this.state = 'waiting'
      this.abortWith(new ProxyError('ERR_BAD_RESPONSE_HEADER', (err as Error).message, { phase: 'head', cause: err }))
      return
    }
    this.drain = () => { this.arm(); flow.resume() }
    this.arm()
  }

  onData (chunk: Buffer): boolean {
    if (this.state !== 'denying') return true
    if (this.main.res.write(chunk)) { this.arm(); return true }
    // Paused for the client: the authorizer is not the one that is slow.
    if (this.timer !== null) { clearTimeout(this.timer); this.timer = null }
    if (this.drain !== null) this.main.res.once('drain', this.drain)
    return false
  }

  onEnd (): void {
    if (this.state === 'allowed') {
      this.release()
      this.resolve({ allowed: true, variables: this.variables })
    } else if (this.state === 'denying') {
      this.release()
      this.main.res.end()
      this.resolve({ allowed: false, status: this.status })
    } else {
      this.settle(new ProxyError('ERR_BAD_RESPONSE', 'authorizer ended without a response head', { phase: 'head' }))
    }
    this.state = 'done'
  }

  onError (err: ProxyError): void {
    if (this.state === 'done') return
    if (this.abortReason !== null) err = this.abortReason
    const b = this.backend
    if (b !== null) {
      if (err.phase === 'connect') this.a.pool.connectFailed(b, err.code, backendOverloaded(err))
      // Passive health after the connect, counted as the route's own exchanges count it (exchange.ts
      // onError, pool.ts attemptFailed): a reset, a close, the `timeout` or an invalid head before
      // any head. Not after one (a refusal or a 200 cut short), and never the client's leaving.
      else if (this.state === 'waiting' && !this.main.signal.aborted && isFailedAttempt(err)) this.a.pool.attemptFailed(b, err.code)
      if (this.state === 'waiting' && this.abortReason === null && !this.main.signal.aborted && resendable(err)) {
        // Failover: the next backend of the authorizer pool not tried yet, each at most once.
        this.a.pool.finished(b)
        this.backend = null
        this.tried ??= new Set()
        this.tried.add(b)
        if (err.backend === undefined) err.backend = b.endpoint.id
        this.lastError = err
        this.dispatch()
        return
      }
    }
    if (this.state === 'denying') {
      // The denial was already streaming: cut it, never pad it.
      this.release()
      this.state = 'done'
      this.main.res.destroy(err)
      this.resolve({ allowed: false, status: this.status })
      return
    }
    this.settle(err)
  }

  private abortWith (err: ProxyError): void {
    // Aborting makes the adapter report back at once (ERR_CLIENT_ABORTED): the reason is ours.
    this.abortReason ??= err
    if (!this.ac.signal.aborted) this.ac.abort()
    this.onError(err)
  }

  private settle (err: ProxyError): void {
    if (this.state === 'done') return
    this.state = 'done'
    this.release()
    this.reject(err)
  }

  private release (): void {
    if (this.timer !== null) { clearTimeout(this.timer); this.timer = null }
    this.main.signal.removeEventListener('abort', this.onMainAbort)
    if (this.backend !== null) { this.a.pool.finished(this.backend); this.backend = null }
  }
}
