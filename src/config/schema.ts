/**
 * The one schema: it gives the TypeScript types (`Static<>`), runtime validation, and the published
 * JSON Schema (`schema/proxycore.schema.json`, generated from this file). Key names follow the
 * lighttpd mod_spawn / mod_proxy_core vocabulary in camelCase. Every field carries an
 * operator-facing description; the config reference in docs/ is generated from them.
 */
import { Type, type Static } from '@sinclair/typebox'
import { Duration, Size, SPAWN_NAME_PATTERN, StrictRecord, StringOrList, VARIABLE_NAME_PATTERN, VARIABLE_VALUE_PATTERN } from './schema-parts.js'
import { IdentityPolicySchema, SpawnSchema, TenantSchema } from './spawn-schema.js'

export const MatchSchema = Type.Object({
  host: Type.Optional(StringOrList('Exact host, or `*.example.com` for any subdomain; compared without case, trailing dot or the request port. A host with a port is refused.')),
  prefix: Type.Optional(Type.String({ pattern: '^/', description: 'Path prefix, e.g. `/api/` (also matches `/api`).' })),
  extension: Type.Optional(StringOrList('File extension(s), e.g. `.php`; `/index.php/extra` matches too.')),
  glob: Type.Optional(Type.String({ description: 'Glob over the normalised path (docs/reference/config.md, Route matching), e.g. `/static/**/*.css`.' })),
  regex: Type.Optional(Type.String({ description: 'JavaScript regular expression over the normalised (decoded) path.' })),
  methods: Type.Optional(Type.Array(Type.String({ pattern: '^[A-Za-z]+$' }), { description: 'Allowed methods, e.g. [GET, HEAD].' })),
}, { additionalProperties: false, description: 'Every given field must match. An empty match matches everything.' })

export const TimeoutsSchema = Type.Object({
  connect: Type.Optional(Duration('Connecting to a backend (ERR_CONNECT_TIMEOUT, tried on the next backend). 0 = no timer of its own: the kernel\'s connect timeout applies.', '5s')),
  headers: Type.Optional(Duration('From dispatch to the response head (on an http route from the moment the request has its backend connection, not while it waits for one of the `connections`); while the request body is still arriving from the client, from its last byte (a long upload is not a late head; a pause of the client whose bytes the backend has all read is clientIdle\'s, not a late head), and while the backend still takes the body, from its last step (nginx: proxy_read_timeout once the request is sent). A request waiting for a spawn to become routable waits this long too, at least 1 s. 0 = no limit.', '60s')),
  idle: Type.Optional(Duration('Longest pause of the backend inside a response body; it does not run while the proxy holds the backend back for a slow client. 0 = no limit.', '60s')),
  clientIdle: Type.Optional(Duration('Longest pause of the client: inside its request body (slow-drip uploads get 408 `ERR_REQUEST_TIMEOUT`), or in reading a response the backend or an X-Sendfile file waits to send (the connection is cut, `ERR_CLIENT_TIMEOUT`). 0 = no limit.', '60s')),
  minUploadRate: Type.Optional(Size('Slowest average rate, in bytes per second, at which a request body may arrive (mod_reqtimeout MinRate): past uploadGrace, a body that fell behind it gets 408 `ERR_UPLOAD_TOO_SLOW`, so a client cannot hold a slot and a backend by trickling a byte now and then. Counted from the start of the body; time the proxy itself holds the client back (a backend reading slowly, a spool write, Expect: 100-continue) does not count. 0 = no minimum.', '500')),
  uploadGrace: Type.Optional(Duration('Time credit of minUploadRate: a body may lag this far behind the rate, counted from its start, before it is cut (mod_reqtimeout body=). The default equals the clientIdle default, so a pause at the start is never cut sooner than clientIdle would cut it.', '60s')),
  tunnel: Type.Optional(Duration('Longest time an upgraded connection (WebSocket) carries no byte in either direction; then both sides are closed. Once one side sent its FIN, `idle` bounds the other. 0 = no limit.', '1h')),
}, { additionalProperties: false })

export const RouteSchema = Type.Object({
  name: Type.Optional(Type.String({ description: 'Name for logs, metrics and the status page (default: its index). Unique; with a `status` block not `status`, nor `metrics` unless `metricsPath: false` (the labels of the requests the status handler answers).' })),
  match: Type.Optional(MatchSchema),
  protocol: Type.String({ description: '`http`, `fastcgi`, `scgi`, `cgi`, `static` (files under docroot, docs/protocols/static.md), or a registered custom adapter.' }),
  backends: Type.Optional(Type.Array(Type.String(), { minItems: 1, description: 'Fixed backends: `host:port`, `[v6]:port`, `unix:/path`, each address once. Not for static routes.' })),
  spawn: Type.Optional(Type.String({ description: 'Name of a spawn whose processes serve this route. Not for static routes.' })),
  balance: Type.Optional(Type.Union([
    Type.Literal('least-connection'), Type.Literal('round-robin'), Type.Literal('hash'), Type.Literal('sticky'),
  ], { default: 'least-connection', description: 'hash: by URL; sticky: by client address.' })),
  disableTime: Type.Optional(Duration('How long a backend that refused a connection is skipped; one that is only busy (its listen queue full, EAGAIN, or a FastCGI FCGI_OVERLOADED answer) at most 1s; the only backend of a route never. Also the window and the time for failures after the connect: 3 of them (a reset or close before the response head, a headers timeout, a malformed head) within disableTime with no answered request in between skip a backend for disableTime, never the last usable one of a route.', '10s')),
  maxFails: Type.Optional(Type.Integer({ minimum: 0, default: 3, description: 'Failed attempts after the connect (a reset or close before the response head, a headers timeout, a malformed head) within disableTime, with no answered request in between, that skip a backend for disableTime (nginx max_fails; never the last usable backend of the route). 0 = only failed connects disable a backend.' })),
  retries: Type.Optional(Type.Integer({ minimum: 0, default: 2, description: 'How many more attempts a request gets, each on a backend or spawned process it was not sent to (never the same live one twice): after a connect failure, and for an idempotent request (GET, HEAD, PUT, DELETE, OPTIONS, TRACE) with no body or a spooled one whose backend connection was reset or closed before any response byte. 0 sends nothing again.' })),
  maxConcurrent: Type.Optional(Type.Integer({ minimum: 0, default: 0, description: 'Exchanges in flight for this route; 0 = unlimited.' })),
  queue: Type.Optional(Type.Integer({ minimum: 0, default: 1024, description: 'Requests waiting for a slot beyond maxConcurrent; more are dropped with 503.' })),
  queueTimeout: Type.Optional(Duration('Longest wait in the queue before 503. It also bounds, separately, a request\'s wait for a free connection to its backend behind the adapter\'s cap (http option `connections`, fastcgi `maxConnections` or the backend\'s FCGI_MAX_CONNS): 503 ERR_QUEUE_TIMEOUT, not counted against the backend.', '30s')),
  timeouts: Type.Optional(TimeoutsSchema),
  maxBodySize: Type.Optional(Size('Largest request body accepted (413 beyond): a Content-Length one is refused before it is read, a chunked one once it passes the limit. 0 = unlimited.', '0')),
  spoolLimit: Type.Optional(Size('CGI-family protocols: largest request body spooled (memory up to 64 KiB, then an unlinked temp file) to learn its length (chunked) or, with requestBuffering, to read it whole before the backend is contacted; 413 beyond, a Content-Length one before it is read.', '1GiB')),
  requestBuffering: Type.Optional(Type.Boolean({ default: true, description: 'CGI-family protocols (fastcgi, scgi, cgi): read the whole request body, up to spoolLimit, before the backend is contacted (nginx fastcgi_request_buffering, lighttpd server.stream-request-body = 0). A client that goes away or times out in the middle of its upload never reaches the script, and a slow upload holds no backend worker or process. false streams a Content-Length body to the backend as it arrives (chunked ones are still spooled: the backend needs CONTENT_LENGTH). Not for http, which always streams.' })),
  stripPrefix: Type.Optional(Type.Boolean({ default: false, description: 'Send the path without `match.prefix` (the prefix maps to `/`). Location and Set-Cookie Path are rewritten back.' })),
  hostHeader: Type.Optional(Type.String({ default: 'preserve', description: '`preserve` (client Host), `backend` (the backend address), or a literal host.' })),
  xForwarded: Type.Optional(Type.Boolean({ default: true, description: 'Append X-Forwarded-For, set X-Forwarded-Proto/Host; from an untrusted peer, drop its X-Real-IP and X-Forwarded-Port/-Prefix/-Server.' })),
  forwarded: Type.Optional(Type.Boolean({ default: false, description: 'Add an RFC 7239 Forwarded element: after a trusted peer\'s elements; an untrusted peer\'s own are dropped.' })),
  via: Type.Optional(Type.String({ default: '', description: 'Pseudonym in the Via header this route adds (`1.1 <via>`, RFC 9110 §7.6.3), also used to detect loops: a request whose Via already names it is refused with 508 `ERR_LOOP_DETECTED`. Empty on an `http` route: a random pseudonym per proxy instance (`proxycore-` and 12 hex digits), so an http route always adds Via; chained instances must not share one. Empty on a CGI-family route: no Via.' })),
  docroot: Type.Optional(Type.String({ description: 'CGI-family: scripts are resolved under this directory. static (required): the directory whose files are served, as nginx root.' })),
  scriptFilename: Type.Optional(Type.String({ description: 'CGI-family without docroot: the single entry point (SCRIPT_FILENAME).' })),
  scriptExtensions: Type.Optional(Type.Array(Type.String(), { minItems: 1, description: 'CGI-family: the resolved script must end with one of these (default: match.extension). Set it on prefix routes so `/uploads/x.jpg` never runs as PHP.' })),
  index: Type.Optional(Type.Array(Type.String(), { description: 'Index files for directory requests, e.g. [index.php], or [index.html] on a static route; a directory without one is a 404 (no listings).' })),
  symlinks: Type.Optional(Type.Union([Type.Literal('follow'), Type.Literal('owner'), Type.Literal('deny')], { default: 'owner', description: 'Symlinks met on the way to a script or a static file: `owner` follows one only when the link, every further link of its chain, and its target belong to the same user (Apache SymLinksIfOwnerMatch, which compares the first link only), `follow` any, `deny` none. In every mode the file must stay inside docroot.' })),
  params: Type.Optional(StrictRecord(Type.String({ pattern: VARIABLE_NAME_PATTERN }), Type.String({ pattern: VARIABLE_VALUE_PATTERN }), 'Extra CGI variables (never HTTP_PROXY); no NUL anywhere, no `=` in a name.')),
  localRedirects: Type.Optional(Type.Boolean({ default: false, description: 'CGI-family: re-process `Location: /path` (no Status) inside this route as a GET (RFC 3875 §6.2.2). Off: the client gets the answer as a 302 with its other fields (Set-Cookie) and body (CVE-2024-38476).' })),
  passAuthorization: Type.Optional(Type.Boolean({ default: false, description: 'CGI-family: pass the Authorization header as HTTP_AUTHORIZATION (opt-in, RFC 3875 §9.2; httpd CGIPassAuth).' })),
  options: Type.Optional(Type.Unknown({ description: 'Protocol-specific options, validated by the adapter, e.g. fastcgi `maxConnections`, http `connections` and `keepAliveTimeout`, static `cacheControl` and `precompressed` (docs/protocols and docs/guides/http-and-websockets.md list them all).' })),
  xSendfile: Type.Optional(Type.Object({
    allow: Type.Array(Type.String({ pattern: '^/' }), { minItems: 1, description: 'Directories the backend may name; the file\'s real path must be inside one.' }),
  }, { additionalProperties: false, description: 'Serve `X-Sendfile` / `X-LIGHTTPD-send-file` responses from disk (lighttpd x-sendfile + x-sendfile-docroot). Off when absent.' })),
  authorizer: Type.Optional(Type.Object({
    backends: Type.Optional(Type.Array(Type.String(), { minItems: 1, description: 'FastCGI authorizer addresses.' })),
    spawn: Type.Optional(Type.String({ description: 'A socket spawn running the authorizer.' })),
    scriptFilename: Type.Optional(Type.String({ description: 'SCRIPT_FILENAME sent to the authorizer (e.g. /srv/auth.php).' })),
    timeout: Type.Optional(Duration('How long the authorizer may take to answer.', '10s')),
    options: Type.Optional(Type.Unknown({ description: 'FastCGI adapter options for the authorizer.' })),
  }, { additionalProperties: false, description: 'FastCGI Authorizer (FastCGI 1.0 §6.3, lighttpd mode=authorizer) asked before the handler: 200 continues, its Variable-* values named REMOTE_USER, AUTH_TYPE, AUTH* or X_* added as CGI variables the environment does not have yet (others dropped); any other answer goes to the client.' })),
}, { additionalProperties: false })

export const TrustedProxiesSchema = Type.Array(Type.String(), { description: 'Addresses/CIDRs whose X-Forwarded-For (or the forwardedHeader chosen) and X-Forwarded-Proto are believed.' })
export const ForwardedHeaderSchema = Type.Union([Type.Literal('x-forwarded-for'), Type.Literal('forwarded')], {
  default: 'x-forwarded-for',
  description: 'The one header a trusted proxy\'s client chain is read from (nginx real_ip_header); the other is ignored, since a front proxy that appends to one passes a client\'s own other header through.',
})

export const ProxyConfigSchema = Type.Object({
  routes: Type.Array(RouteSchema, { description: 'First match wins.' }),
  trustedProxies: Type.Optional(TrustedProxiesSchema),
  forwardedHeader: Type.Optional(ForwardedHeaderSchema),
  serverName: Type.Optional(Type.String({ description: 'SERVER_NAME fallback when a request has no Host.' })),
  maxResponseHeadSize: Type.Optional(Size('Largest backend response head.', '64KiB')),
}, { additionalProperties: true })

const ListenSchema = Type.Union([
  Type.String({ minLength: 1 }),
  Type.Array(Type.String({ minLength: 1 }), { minItems: 1 }),
], { default: '127.0.0.1:8080', description: 'Where the gateway listens: host:port, [v6]:port, or unix:/path; one or a list. Port 0 lets the OS pick (the bound address is logged).' })

export const StatusSchema = Type.Object({
  path: Type.Optional(Type.String({ pattern: '^/', default: '/server-status', description: 'Status page path: HTML, JSON with `?format=json` or `Accept: application/json`.' })),
  metricsPath: Type.Optional(Type.Union([Type.String({ pattern: '^/' }), Type.Literal(false)], { default: '/metrics', description: 'Path of the Prometheus metrics, answered on every listener to the same `allow` and `hosts` lists; `false` serves no metrics, so a request for `/metrics` reaches the routes (a backend with its own metrics). Must differ from `path` and `<path>/live`.' })),
  allow: Type.Optional(Type.Array(Type.String(), { default: ['127.0.0.0/8', '::1'], description: 'Client addresses/CIDRs allowed to read it, and `unix:` for every client of a unix-socket listener; others get 403.' })),
  hosts: Type.Optional(Type.Array(Type.String({ pattern: '^(\\*|[A-Za-z0-9_.-]+|\\[[0-9A-Fa-f:.]+\\])$' }), { default: [], description: 'Host names (of the Host header) the status page, its JSON, live view and metrics answer, against DNS rebinding; others get 403. IP literals and `localhost` (any port) are always answered; a listed name is answered case-insensitively, trailing dot ignored, any port; `\'*\'` answers every Host. A Prometheus that scrapes by a host name must list it.' })),
}, { additionalProperties: false, description: 'The built-in status page (spawns, processes, routes) and Prometheus metrics.' })

/** The operator file (proxycore.yaml / .json): the published JSON Schema is generated from this. */
export const OperatorConfigSchema = Type.Object({
  $schema: Type.Optional(Type.String({ description: 'Editors: the JSON Schema of this file.' })),
  listen: Type.Optional(ListenSchema),
  include: Type.Optional(StringOrList('fast-glob patterns relative to this file (e.g. conf.d/*.yaml); files are merged in sorted order: their routes come before the routes of this file (so its catch-all stays last), spawns/tenants are added (a name defined twice is an error).')),
  status: Type.Optional(StatusSchema),
  runDir: Type.Optional(Type.String({ description: 'Directory for spawn pid files; lets a restarted proxycore stop children orphaned by a crashed one.' })),
  logDir: Type.Optional(Type.String({ description: 'Directory for `<spawn>.log` files with the spawns\' stdout/stderr (rotated); without it they go to the log.' })),
  accessLog: Type.Optional(Type.Object({
    path: Type.String({ minLength: 1, description: 'File the lines are appended to (created with mode 0640, its directory must exist: serve does not start and a reload is refused without it), relative to the directory of this file; `stdout` writes them to standard output. SIGUSR1 and every reload open the file again (logrotate).' }),
    format: Type.Optional(Type.Union([Type.Literal('combined'), Type.Literal('json')], { default: 'combined', description: '`combined`: the Apache/nginx combined format plus route, upstream, upstream status, times and error code; `json`: one JSON object per line.' })),
  }, { additionalProperties: false, description: 'Access log of `proxycore serve`: one line per response (those the proxy makes itself too: 404, 400, 503). Without this key there is none. createProxy ignores it: embedders call createAccessLog.' })),
  logLevel: Type.Optional(Type.Union(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].map((l) => Type.Literal(l)), { default: 'info', description: 'Log level, applied again on every reload (PROXYCORE_LOG_LEVEL overrides).' })),
  drainTimeout: Type.Optional(Duration('On SIGTERM or reload: how long in-flight requests and open WebSockets may take to finish; then they are ended (503 `ERR_SHUTTING_DOWN`, or the connection cut).', '30s')),
  spawns: Type.Optional(StrictRecord(Type.String({ pattern: SPAWN_NAME_PATTERN }), SpawnSchema, 'Backend programs proxycore starts and supervises, by name (ASCII letters, digits, `_`, `.` and `-`).')),
  tenants: Type.Optional(StrictRecord(Type.String(), TenantSchema, 'Named identity + limits blocks shared by spawns (`spawns.<name>.tenant`).')),
  identity: Type.Optional(IdentityPolicySchema),
  routes: Type.Array(RouteSchema, { description: 'First match wins. The routes of included files come first, then those of this file. Marked required for editors, but check and serve accept a file without it: its routes may all come from `include` (with none at all, every request but the status page gets 404).' }),
  trustedProxies: Type.Optional(TrustedProxiesSchema),
  forwardedHeader: Type.Optional(ForwardedHeaderSchema),
  serverName: Type.Optional(Type.String({ description: 'SERVER_NAME fallback when a request has no Host.' })),
  maxResponseHeadSize: Type.Optional(Size('Largest backend response head.', '64KiB')),
}, { additionalProperties: false, title: 'proxycore configuration' })

export type OperatorConfig = Static<typeof OperatorConfigSchema>
export type MatchConfig = Static<typeof MatchSchema>
export type TimeoutsConfig = Static<typeof TimeoutsSchema>
export type RouteConfig = Static<typeof RouteSchema>

/**
 * `createProxy()`: the file's shape plus the embedder-only options, as strict as the file. createProxy
 * takes those options off before the check (their values are functions and objects of the
 * embedder's), so they are here only to be known keys: a misspelt one (`loger`) is an unknown key
 * with a did-you-mean among them too, not silently ignored.
 */
export const EmbedConfigSchema = Type.Object({
  ...OperatorConfigSchema.properties,
  adapters: Type.Optional(Type.Unknown({ description: 'Extra protocol adapters for this proxy only.' })),
  sources: Type.Optional(Type.Unknown({ description: 'Backend sources by spawn name, the embedder\'s own.' })),
  processStarters: Type.Optional(Type.Unknown({ description: 'Per-request process starters by spawn name, for cgi routes.' })),
  logger: Type.Optional(Type.Unknown({ description: 'A logger with debug, info, warn and error (pino, console).' })),
  gc: Type.Optional(Type.Unknown({ description: 'V8\'s gc function for large bodies, or false.' })),
}, { additionalProperties: false })
