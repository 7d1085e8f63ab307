/**
 * The one table of stable error codes. A code, once shipped, never changes meaning
 * (the Node `lib/internal/errors.js` rule). Every code has the HTTP status the client
 * sees when the error happens before the response head went out, and the action an
 * operator should take. `docs/reference/errors.md` mirrors this table; a test keeps
 * them in step.
 *
 * Status mapping happens here and only here: the pipeline asks `statusFor(err)`.
 */

export interface ErrorSpec {
  /** HTTP status sent to the client (if no response byte was sent yet). */
  status: number
  /** One line: what happened. */
  message: string
  /** One line: what an operator should do about it. */
  action: string
  /** Retry on another backend is safe (no request byte reached the backend). */
  retryable?: boolean
}

export const ERRORS = {
  // --- routing and admission -------------------------------------------------
  ERR_NO_ROUTE: { status: 404, message: 'No route matches the request', action: 'Add a route for this host/path, or expect 404.' },
  ERR_QUEUE_FULL: { status: 503, message: 'Route is at maxConcurrent and its wait queue is full', action: 'Raise maxConcurrent/queue on the route, or add backends.' },
  ERR_QUEUE_TIMEOUT: { status: 503, message: 'Request waited in the route queue, or for a free connection to its backend (http `connections`, fastcgi `maxConnections`), longer than queueTimeout', action: 'Raise maxConcurrent (the http option connections, the fastcgi maxConnections with the backend\'s workers) or queueTimeout, or add backends.' },
  ERR_NO_BACKEND: { status: 503, message: 'Every backend of the pool is disabled or down', action: 'Check the backends; they come back after disableTime or when the spawn recovers.' },
  ERR_SPAWN_FAILED: { status: 503, message: 'The spawn behind this route is in FAILED state', action: 'Read the spawn log and fix the backend; a reload (SIGHUP) restarts a FAILED spawn, embedders call `spawns.clear(name)`.' },
  ERR_SPAWN_NOT_READY: { status: 503, message: 'The spawned backend did not become ready in time', action: 'Check the start timeout and the backend log.' },
  ERR_SHUTTING_DOWN: { status: 503, message: 'The proxy is shutting down', action: 'None if it arrived during a drain; one still in flight when the drain ended: raise drainTimeout.' },
  ERR_LOOP_DETECTED: { status: 508, message: 'The request came back to this proxy: its Via already names this instance', action: 'Fix the route whose backend leads back to the proxy (its own listen address, or a chain that returns to it); two instances in a chain must not be given one `via` pseudonym.' },

  // --- client side --------------------------------------------------------------
  ERR_BAD_REQUEST: { status: 400, message: 'Malformed or ambiguous request', action: 'None: the client sent a request the proxy will not forward.' },
  ERR_CONNECT_METHOD: { status: 501, message: 'CONNECT (a tunnel to another host, as a forward proxy opens) is not offered by this reverse proxy', action: 'None: such a client wants a forward proxy; proxycore answers requests for its own routes.' },
  ERR_UNSUPPORTED_TRANSFER_CODING: { status: 501, message: 'The request uses a transfer coding the proxy cannot decode', action: 'None: the client sent a Transfer-Encoding other than chunked (RFC 9112 §6.1).' },
  ERR_TOO_MANY_HEADERS: { status: 431, message: 'The request has more header lines than the proxy forwards (1000)', action: 'None if the client is hostile; else send fewer headers (node:http drops the lines past its count limit unseen, Content-Length included).' },
  ERR_BAD_HEADER_VALUE: { status: 400, message: 'A request header cannot be encoded for the backend protocol', action: 'None: the client sent a header with a forbidden byte.' },
  ERR_BODY_TOO_LARGE: { status: 413, message: 'Request body exceeds the configured limit', action: 'Raise maxBodySize on the route if the upload is legitimate (spoolLimit when the log names it: a body buffered for FastCGI, SCGI or CGI).' },
  ERR_LENGTH_REQUIRED: { status: 411, message: 'The backend protocol needs a Content-Length and spooling is disabled', action: 'Enable body spooling for the route, or have clients send Content-Length.' },
  ERR_REQUEST_TIMEOUT: { status: 408, message: 'The client stopped sending its request body', action: 'None if the client is slow or hostile; else raise timeouts.clientIdle.' },
  ERR_UPLOAD_TOO_SLOW: { status: 408, message: 'The client sent its request body slower than the route allows', action: 'None if the client is slow or hostile; else lower timeouts.minUploadRate (0 = no minimum) or raise timeouts.uploadGrace.' },
  ERR_CLIENT_TIMEOUT: { status: 408, message: 'The client stopped reading its response', action: 'None if the client is slow or hostile; else raise timeouts.clientIdle.' },
  ERR_NO_DESCRIPTORS: { status: 503, message: 'The proxy ran out of file descriptors (EMFILE/ENFILE) while serving the request', action: 'Raise the open-files limit of proxycore (LimitNOFILE= in its systemd unit, ulimit -n in its start script) or fs.file-max; the requests already open are served, new ones are again once descriptors free up.' },
  ERR_SPOOL_NO_SPACE: { status: 507, message: 'The request body could not be spooled: no space left in the spool directory', action: 'Free space (or inodes, quota) in the temp directory (TMPDIR), or lower spoolLimit/maxBodySize on the route.' },
  ERR_CLIENT_ABORTED: { status: 499, message: 'The client went away before the response completed', action: 'None: not an error of the proxy or backend.' },

  // --- script resolution (CGI family) ---------------------------------------------
  ERR_SCRIPT_NOT_FOUND: { status: 404, message: 'No script file matches the request path under the docroot', action: 'None if the URL is wrong; else check docroot and the route rule.' },
  ERR_SCRIPT_FORBIDDEN: { status: 403, message: 'Script path rejected by the resolver (traversal, symlink, rule mismatch)', action: 'Check the docroot layout and the route symlink policy.' },

  // --- static files (protocol static) ------------------------------------------------
  ERR_STATIC_HIDDEN: { status: 404, message: 'The path names a dot file or dot directory (.git, .env, .htaccess), which a static route never serves', action: 'None: such files are not served; move a public file to a name without a leading dot (/.well-known/ is served).' },
  ERR_METHOD_NOT_ALLOWED: { status: 405, message: 'A static route answers GET and HEAD only', action: 'None if the client is wrong; else route that method to a backend before the static route.' },
  ERR_PRECONDITION_FAILED: { status: 412, message: 'If-Match or If-Unmodified-Since did not hold for the file', action: 'None: the file changed since the client last saw it (a static route compares If-Match strongly; its ETags are weak, so only `*` holds).' },
  ERR_STATIC_READ: { status: 500, message: 'A file could not be read to the end of its Content-Length while it was sent (it shrank, or the disk failed); the connection was cut', action: 'Deploy files by writing a new one and renaming it over the old (atomic), not by rewriting them in place; else check the disk.' },
  ERR_RANGE_NOT_SATISFIABLE: { status: 416, message: 'The requested byte range lies beyond the end of the file', action: 'None: the client asked for bytes the file does not have (the answer names its size).' },

  // --- backend connection -----------------------------------------------------------
  ERR_CONNECT_REFUSED: { status: 502, message: 'Backend refused the connection', action: 'Start the backend or fix its address.', retryable: true },
  ERR_CONNECT_TIMEOUT: { status: 504, message: 'Connecting to the backend timed out', action: 'Check the backend host and its listen backlog.', retryable: true },
  ERR_CONNECT_FAILED: { status: 502, message: 'Could not connect to the backend', action: 'Check the backend address and that it is listening; EAGAIN means its listen queue is full (every worker busy: raise its workers or backlog).', retryable: true },
  ERR_BACKEND_OVERLOADED: { status: 503, message: 'Backend reported it is overloaded', action: 'Add capacity to the backend or lower maxConcurrent.', retryable: true },

  // --- backend exchange -----------------------------------------------------------
  ERR_HEADERS_TIMEOUT: { status: 504, message: 'Backend did not send the response head in time', action: 'Raise timeouts.headers, or find out why the backend is slow.' },
  ERR_BODY_TIMEOUT: { status: 504, message: 'Backend response body was idle for too long', action: 'Raise timeouts.idle (for an authorizer whose answer did not end in time: its timeout), or find out why the backend stalls.' },
  ERR_BACKEND_CLOSED: { status: 502, message: 'Backend closed the connection before the response was complete', action: 'Read the backend log: it crashed or closed early.' },
  ERR_BACKEND_RESET: { status: 502, message: 'Backend connection reset', action: 'Read the backend log: it crashed or was killed.' },
  ERR_BAD_RESPONSE: { status: 502, message: 'Backend sent a malformed response', action: 'Fix the backend: its response violates the protocol.' },
  ERR_BAD_RESPONSE_HEADER: { status: 502, message: 'Backend sent a forbidden or malformed response header', action: 'Fix the backend: CR/LF/NUL or a hop-by-hop header in its response.' },
  ERR_RESPONSE_HEAD_TOO_LARGE: { status: 502, message: 'Backend response head exceeds the size limit', action: 'Fix the backend or raise maxResponseHeadSize.' },
  ERR_REDIRECT_LOOP: { status: 500, message: 'Too many local redirects', action: 'Fix the script: its Location local redirect loops.' },
  ERR_PROTOCOL: { status: 502, message: 'Backend violated its wire protocol', action: 'Fix the backend, or check the route uses the right protocol.' },
  ERR_UNKNOWN_ROLE: { status: 502, message: 'FastCGI backend does not support the requested role', action: 'Use a backend that supports this role (responder/authorizer).' },
  ERR_UPGRADE_FAILED: { status: 502, message: 'Backend refused or broke the protocol upgrade', action: 'Check the backend supports the Upgrade protocol asked for.' },
  ERR_CGI_EXIT: { status: 502, message: 'CGI program exited before sending a response head', action: 'Read the CGI stderr log.' },
  ERR_CGI_SPAWN: { status: 502, message: 'CGI program could not be started', action: 'Check binPath, permissions, and the interpreter.' },
  ERR_CGI_FORK_SERVER: { status: 502, message: 'The CGI fork server died or failed while this program was starting or running; the program was killed', action: 'Read the log line (it names why); the next request restarts the fork server. `launcher: direct` on the spawn bypasses it.' },
  ERR_CGI_FORK_SERVER_NO_DESCRIPTORS: { status: 503, message: 'The CGI fork server (not the proxy) ran out of file descriptors (EMFILE) while starting this program; only this request failed', action: 'The fork server has an open-files limit of its own: it inherits the proxy\'s at its start (LimitNOFILE=, ulimit -n), unless something lowered it since (prlimit --pid). It goes on serving; the message names its pid.' },
  ERR_SENDFILE_FORBIDDEN: { status: 502, message: 'X-Sendfile path refused: outside the allowed roots, not a regular file, not readable by the owner of its allowed root, or not readable by the proxy itself', action: 'The log line says which. Fix the backend, add the directory to xSendfile.allow, or fix the file (a hard link to a private file is refused; a proxy not running as root needs read access to the file and its directories).' },

  // --- spawn layer (src/spawn); definition errors surface at load, the rest as a FAILED spawn ------
  ERR_SPAWN_BAD_SPEC: { status: 500, message: 'Invalid spawn definition', action: 'Fix the spawn in the config (the message names the key).' },
  ERR_SPAWN_BAD_ADDRESS: { status: 500, message: 'Invalid spawn socketName', action: 'Use host:port, [v6]:port or an absolute unix socket path.' },
  ERR_SPAWN_ADDRESS_IN_USE: { status: 503, message: 'The spawn address is in use by another program', action: 'Stop the other program or change socketName.' },
  ERR_SPAWN_BIND: { status: 503, message: 'The spawn listening socket could not be bound', action: 'Check the directory/port permissions of socketName.' },
  ERR_SPAWN_EXEC: { status: 503, message: 'The backend program could not be executed', action: 'Check binPath exists and is executable by the spawn user.' },
  ERR_SPAWN_UNKNOWN: { status: 500, message: 'No spawn of that name', action: 'Fix the spawn name (route `spawn:` or API call).' },
  ERR_SPAWN_UNKNOWN_DEPENDENCY: { status: 500, message: 'dependsOn names an unknown spawn', action: 'Fix dependsOn.' },
  ERR_SPAWN_DEPENDENCY_CYCLE: { status: 500, message: 'dependsOn forms a cycle', action: 'Break the dependency cycle.' },
  ERR_SPAWN_GROUPS_UNSUPPORTED: { status: 503, message: 'groups: user needs util-linux setpriv, which is not installed', action: 'Install util-linux (setpriv), or use groups: none.' },
  ERR_SPAWN_CHROOT_UNSAFE: { status: 503, message: 'The chroot directory is unusable or unsafe', action: 'Use an absolute, root-owned directory not writable by group or others (not a symlink), and set user and group.' },
  ERR_SPAWN_SOCKET_DIR_UNSAFE: { status: 503, message: 'With handoff self, the directory of the unix socket, or one above it, can be written by a user other than root and the spawn user, who could bind the socket name first; or, for a spawn run as another user, no directory on its path keeps other users from connecting to it', action: 'Put the socket in a directory owned by the spawn user (or root) and not writable by group or others, sticky or not, with no directory above it writable by others (a root-owned sticky one such as /tmp is fine above it); for a spawn run as another user, one others cannot search either (mode 0700), or use handoff fd0.' },
  ERR_SPAWN_SOCKET_NOT_OWNED: { status: 503, message: 'With handoff self, what listens at the unix socket path once the program was ready is not a socket owned by the spawn user', action: 'Stop the process that bound the name (ss -xlp), and keep the socket in a directory only the spawn user can write.' },
  ERR_SPAWN_CHROOT_UNSUPPORTED: { status: 503, message: 'chroot needs util-linux unshare, which is not installed', action: 'Install util-linux (unshare), or drop chroot.' },
  ERR_SPAWN_FORK_SERVER_UNSUPPORTED: { status: 503, message: 'launcher: fork-server needs the compiled fork server (built by npm install when a C compiler is there) or, without it, perl and a CPU whose syscall numbers the Perl helper knows (x64, arm64, riscv64, loong64)', action: 'Install gcc and run `npm rebuild proxycore` in your app (`npm run build` in a checkout), or install perl-base (Essential on Debian), or use launcher: auto or direct.' },
  ERR_SPAWN_LIMITS_UNSUPPORTED: { status: 503, message: 'A configured resource limit cannot be applied on this host', action: 'Install util-linux prlimit, or drop the limit.' },

  // --- identity (suEXEC-style, RELIABILITY §1): refused at load for spawns --------------------------
  ERR_IDENTITY_NOT_ROOT: { status: 503, message: 'Switching user needs the host to run as root', action: 'Run proxycore as root, or drop user/group from the spawn.' },
  ERR_IDENTITY_USER_REQUIRED: { status: 500, message: 'group is set without user', action: 'Set both user and group.' },
  ERR_IDENTITY_GROUP_REQUIRED: { status: 500, message: 'user is set without group', action: 'Set both user and group (a uid alone keeps gid 0).' },
  ERR_IDENTITY_BAD_ID: { status: 500, message: 'Malformed numeric user or group id', action: 'Use a name or a plain decimal id.' },
  ERR_IDENTITY_UNKNOWN_USER: { status: 500, message: 'No such user', action: 'Create the user or fix the name.' },
  ERR_IDENTITY_UNKNOWN_GROUP: { status: 500, message: 'No such group', action: 'Create the group or fix the name.' },
  ERR_IDENTITY_UID_ZERO: { status: 500, message: 'Refusing to run a backend as uid 0', action: 'Use an unprivileged user.' },
  ERR_IDENTITY_GID_ZERO: { status: 500, message: 'Refusing to run a backend as gid 0', action: 'Use an unprivileged group.' },
  ERR_IDENTITY_UID_BELOW_MIN: { status: 500, message: 'uid below the configured minimum', action: 'Use a regular user, or lower minUid deliberately.' },
  ERR_IDENTITY_GID_BELOW_MIN: { status: 500, message: 'gid below the configured minimum', action: 'Use a regular group, or lower minGid deliberately.' },
  ERR_IDENTITY_UNKNOWN_TENANT: { status: 500, message: 'The spawn names an unknown tenant environment', action: 'Define the tenant or fix its name.' },
  ERR_IDENTITY_TENANT_CONFLICT: { status: 500, message: 'The spawn sets a user or group that contradicts its tenant', action: 'Set the identity in one place, the tenant; limits may be set in both (those of the spawn win).' },
  ERR_SUEXEC_RELATIVE_PATH: { status: 403, message: 'Program path is not absolute', action: 'Use an absolute binPath.' },
  ERR_SUEXEC_DOTDOT: { status: 403, message: 'Program path contains ..', action: 'Use a canonical path.' },
  ERR_SUEXEC_NOT_FOUND: { status: 403, message: 'Program not found', action: 'Check the path.' },
  ERR_SUEXEC_SYMLINK: { status: 403, message: 'Program is a symlink, or a symlink on its path is owned by a user other than root and the target', action: 'Point binPath at the real file, or relax the symlink policy.' },
  ERR_SUEXEC_NOT_IN_ROOT: { status: 403, message: 'Program is outside the allowed roots', action: 'Move it under an allowed root, or add the root.' },
  ERR_SUEXEC_OWNER_MISMATCH: { status: 403, message: 'Program or its directory is not owned by the target user', action: 'chown it to the spawn user.' },
  ERR_SUEXEC_FILE_WRITABLE: { status: 403, message: 'Program is writable by group or others', action: 'chmod go-w the program.' },
  ERR_SUEXEC_DIR_WRITABLE: { status: 403, message: 'A directory of the program can be changed by another user (writable by group or others, or owned by someone other than the target user or root)', action: 'chmod go-w the directory named, and chown it to the target user or root.' },
  ERR_SUEXEC_SETID: { status: 403, message: 'Program is setuid or setgid', action: 'Remove the setuid/setgid bits.' },
  ERR_SUEXEC_NOT_EXECUTABLE: { status: 403, message: 'Program is not executable', action: 'chmod u+x the program.' },

  // --- configuration ------------------------------------------------------------------------------
  ERR_CONFIG: { status: 500, message: 'Invalid configuration', action: 'Run `proxycore check` and fix every listed path.' },
  ERR_ACCESS_LOG: { status: 500, message: 'The access log file (accessLog.path) cannot be opened', action: 'Create its directory and give the user proxycore runs as write access to it; until then serve does not start and a reload (or SIGUSR1 reopen) keeps the file in use.' },
  ERR_BODY_CONSUMED: { status: 500, message: 'The request body was read before the proxy got the request', action: 'Register proxy.handler before body parsers (express.json(), body-parser, a framework parser), or mount the parsers only on your own routes.' },
  ERR_INSECURE_PARSER: { status: 500, message: 'Requests are parsed leniently (insecureHTTPParser or --insecure-http-parser)', action: 'Create the node:http server without insecureHTTPParser and run node without --insecure-http-parser: a lenient parser lets clients smuggle requests past the proxy.' },

  // --- internal ------------------------------------------------------------------------
  ERR_INTERNAL: { status: 500, message: 'Internal proxy error', action: 'Report a bug with the log line.' },
} as const satisfies Record<string, ErrorSpec>

export type ErrorCode = keyof typeof ERRORS

/** Where in the exchange an error happened; decides retry and what the client sees. */
export type ErrorPhase = 'route' | 'admit' | 'connect' | 'request' | 'head' | 'body'

export class ProxyError extends Error {
  readonly code: ErrorCode
  readonly status: number
  phase: ErrorPhase
  /** The backend that failed, for logs ("127.0.0.1:9000"). */
  backend?: string
  /**
   * Set by an adapter when this failure may be replayed on another connection although the code is
   * not retryable in general (an idempotent bodiless request on a keep-alive connection the backend
   * had just closed, before any response byte).
   */
  replayable = false
  /**
   * Set by an adapter on ERR_BACKEND_RESET / ERR_BACKEND_CLOSED when the backend connection went
   * before any byte of the response arrived. The request may have run (a worker can act on it and
   * die before its first byte), so the core sends it again only when it is idempotent and its body
   * is empty or spooled, to a backend or process it was not sent to yet (exchange.ts, onError).
   */
  unanswered = false

  constructor (code: ErrorCode, detail?: string, opts: { cause?: unknown, phase?: ErrorPhase, backend?: string } = {}) {
    const spec: ErrorSpec = ERRORS[code]
    super(detail ? `${spec.message}: ${detail}` : spec.message, opts.cause === undefined ? undefined : { cause: opts.cause })
    this.name = 'ProxyError'
    this.code = code
    this.status = spec.status
    this.phase = opts.phase ?? 'request'
    if (opts.backend !== undefined) this.backend = opts.backend
  }

  /** No request byte reached the backend: another backend may be tried. */
  get retryable (): boolean {
    return this.replayable || (ERRORS[this.code] as ErrorSpec).retryable === true
  }
}

export function isProxyError (err: unknown): err is ProxyError {
  return err instanceof ProxyError
}

/** The single place where an error becomes an HTTP status. */
export function statusFor (err: unknown): number {
  return isProxyError(err) ? err.status : 500
}

/**
 * A connect refused because the backend's listen queue is full (EAGAIN on a unix socket: php-fpm's
 * listen.backlog with every worker busy): the backend is up, only busy, so it is skipped briefly
 * rather than for a whole disableTime (BackendPool.connectFailed; lighttpd does the same).
 */
export function backendOverloaded (err: ProxyError): boolean {
  return err.phase === 'connect' && (err.cause as NodeJS.ErrnoException | undefined)?.code === 'EAGAIN'
}

/**
 * errno codes of a descriptor shortage: the process (EMFILE, RLIMIT_NOFILE) or the whole system
 * (ENFILE, fs.file-max) has no file descriptor left. A temporary state of the proxy, not a fault
 * of the backend or the request: ERR_NO_DESCRIPTORS (503), which never disables a backend.
 */
export function isDescriptorShortage (err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | null)?.code
  return code === 'EMFILE' || code === 'ENFILE'
}

/** ERR_NO_DESCRIPTORS for `err` (an EMFILE/ENFILE), naming what could not be opened. */
export function noDescriptors (what: string, err: NodeJS.ErrnoException, phase: ErrorPhase, backend?: string): ProxyError {
  return new ProxyError('ERR_NO_DESCRIPTORS', `${what}: ${err.code ?? ''}`, { cause: err, phase, ...(backend !== undefined ? { backend } : {}) })
}

/** Map a socket-level error (ECONNREFUSED, ...) to a stable code. */
export function fromSocketError (err: NodeJS.ErrnoException, phase: ErrorPhase, backend?: string): ProxyError {
  if (isProxyError(err)) return err
  // socket(2) of a connect failing for want of a descriptor says nothing about the backend.
  if (isDescriptorShortage(err)) return noDescriptors(phase === 'connect' ? 'connecting to the backend' : 'backend socket', err, phase, backend)
  let code: ErrorCode
  if (phase === 'connect') {
    code = err.code === 'ECONNREFUSED' || err.code === 'ENOENT'
      ? 'ERR_CONNECT_REFUSED'
      : err.code === 'ETIMEDOUT' ? 'ERR_CONNECT_TIMEOUT' : 'ERR_CONNECT_FAILED'
  } else {
    code = err.code === 'ECONNRESET' || err.code === 'EPIPE' ? 'ERR_BACKEND_RESET' : 'ERR_BACKEND_CLOSED'
  }
  return new ProxyError(code, err.code ?? err.message, { cause: err, phase, ...(backend !== undefined ? { backend } : {}) })
}

/** Config errors carry where in the config they are, what was found and what was expected. */
export class ConfigError extends Error {
  readonly code = 'ERR_CONFIG'
  readonly issues: ConfigIssue[]
  constructor (issues: ConfigIssue[]) {
    super(issues.map(formatIssue).join('\n'))
    this.name = 'ConfigError'
    this.issues = issues
  }
}

export interface ConfigIssue {
  /** JSON-pointer-like path: `/routes/0/match/prefix`. */
  path: string
  message: string
  found?: unknown
  expected?: string
  /** file:line:col where known (YAML/JSON sources). */
  source?: string
}

/** One issue as a line of ConfigError.message: the values it quotes bounded (boundValues). */
export function formatIssue (i: ConfigIssue): string {
  const where = i.source ? `${i.source} ` : ''
  return `${where}${boundValues(`${i.path || '/'}: ${i.message}`)}`
}

/** A quoted value longer than this shows this many characters; a bare word, past WORD_MAX. */
const QUOTE_MAX = 80
/** A bare word (an include pattern, a variable's name) may be a long file path: cut later. */
const WORD_MAX = 200

/** The first QUOTE_MAX characters of `s` (a surrogate pair kept whole), `…` and how many more. */
function clip (s: string, close = ''): string {
  const c = s.charCodeAt(QUOTE_MAX - 1)
  const end = c >= 0xd800 && c <= 0xdbff ? QUOTE_MAX - 1 : QUOTE_MAX
  return `${s.slice(0, end)}…${close} (${s.length - end} more)`
}

/**
 * Each value a message quotes, bounded: a `"…"` string longer than QUOTE_MAX and a bare word
 * longer than WORD_MAX keep their first QUOTE_MAX characters. Messages quote what the file says
 * (`invalid address "…"`, `unknown key "…"`, an include pattern): a 1 MiB `${VAR}` made a 1 MiB
 * line. One pass; a `"` without its closing one is read as text from there on. Used by formatIssue
 * (ConfigError.message) and by the CLI's problem lines (src/config/report.ts issueLine).
 */
export function boundValues (text: string): string {
  if (text.length <= QUOTE_MAX) return text
  let out = ''
  let quotes = true
  let i = 0
  while (i < text.length) {
    if (quotes && text[i] === '"') {
      let j = i + 1
      while (j < text.length && text[j] !== '"') j += text[j] === '\\' ? 2 : 1
      if (j >= text.length) { quotes = false; continue }
      const inner = text.slice(i + 1, j)
      out += inner.length > QUOTE_MAX ? `"${clip(inner, '"')}` : `"${inner}"`
      i = j + 1
    } else if (/\s/.test(text[i])) {
      out += text[i++]
    } else {
      let j = i
      while (j < text.length && !/\s/.test(text[j]) && !(quotes && text[j] === '"')) j++
      const word = text.slice(i, j)
      out += word.length > WORD_MAX ? clip(word) : word
      i = j
    }
  }
  return out
}

/**
 * Any error to a ProxyError: errors of the layers below (the spawn layer rejects with a plain Error
 * whose `code` is one of ours, e.g. ERR_SPAWN_FAILED) keep their code; anything else is internal.
 */
export function toProxyError (err: unknown, phase: ErrorPhase = 'connect'): ProxyError {
  if (err instanceof ProxyError) return err
  const code = (err as { code?: unknown } | null)?.code
  if (typeof code === 'string' && Object.hasOwn(ERRORS, code)) {
    return new ProxyError(code as ErrorCode, (err as Error).message, { cause: err, phase })
  }
  return new ProxyError('ERR_INTERNAL', String(err), { cause: err, phase })
}
