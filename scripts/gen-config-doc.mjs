#!/usr/bin/env node
// Writes docs/reference/config-keys.md from schema/proxycore.schema.json (`npm run docs:config`).
// `--stdout` prints the page instead; test/docs/config-doc.test.ts uses it to prove the committed
// page matches the schema. Descriptions and defaults come from the schema only; this file adds an
// example value per key (EXAMPLES below) and the section layout.
import { readFileSync, writeFileSync } from 'node:fs'

const SCHEMA = new URL('../schema/proxycore.schema.json', import.meta.url)
const OUT = new URL('../docs/reference/config-keys.md', import.meta.url)

/** An example value per key path, written as YAML (flow style). Keys missing here show their default. */
const EXAMPLES = {
  $schema: '../schema/proxycore.schema.json',
  listen: '[127.0.0.1:8080, "unix:/run/proxycore/http.sock"]',
  include: 'conf.d/*.yaml',
  status: '{ path: /server-status, allow: [127.0.0.1, "10.0.0.0/8"] }',
  'status.allow': '[127.0.0.1, "::1", "10.0.0.0/8"]',
  'status.hosts': '[proxy.internal]',
  'status.metricsPath': '/proxycore-metrics',
  runDir: '/run/proxycore',
  logDir: '/var/log/proxycore',
  logLevel: 'debug',
  identity: '{ minUid: 1000, minGid: 1000, allowedRoots: [/srv/sites] }',
  'identity.allowedRoots': '[/srv/sites, /usr/lib/cgi-bin]',
  drainTimeout: '10s',
  accessLog: '{ path: /var/log/proxycore/access.log, format: combined }',
  'accessLog.path': 'stdout',
  'accessLog.format': 'json',
  spawns: '{ php: { binPath: /usr/bin/php-cgi, socketName: 127.0.0.1:0 } }',
  'spawns.<name>.binPath': '/usr/bin/php-cgi',
  'spawns.<name>.socketType': 'pipe',
  'spawns.<name>.socketName': '/run/proxycore/php.sock',
  'spawns.<name>.handoff': 'self',
  'spawns.<name>.environment': '{ PHP_FCGI_CHILDREN: "4" }',
  'spawns.<name>.copyEnvironment': '[PATH, TZ]',
  'spawns.<name>.maxRequests': '500',
  'spawns.<name>.minProcs': '0',
  'spawns.<name>.maxProcs': '4',
  'spawns.<name>.maxLoadPerProc': '4',
  'spawns.<name>.idleTimeout': '5m',
  'spawns.<name>.cwd': '/srv/app',
  'spawns.<name>.chroot': '/srv/jails/alice',
  'spawns.<name>.killSignal': 'SIGQUIT',
  'spawns.<name>.stopTimeout': '2s',
  'spawns.<name>.startTimeout': '30s',
  'spawns.<name>.restart': '{ maxStarts: 3, window: 60s }',
  'spawns.<name>.restart.initialDelay': '1s',
  'spawns.<name>.restart.maxDelay': '1m',
  'spawns.<name>.restart.stableAfter': '5m',
  'spawns.<name>.restart.maxStarts': '3',
  'spawns.<name>.restart.window': '60s',
  'spawns.<name>.healthCheck': '{ type: connect, interval: 5s }',
  'spawns.<name>.healthCheck.type': 'command',
  'spawns.<name>.healthCheck.command': '/usr/local/bin/app-health',
  'spawns.<name>.healthCheck.interval': '5s',
  'spawns.<name>.healthCheck.timeout': '500ms',
  'spawns.<name>.healthCheck.failures': '5',
  'spawns.<name>.dependsOn': '[db]',
  'spawns.<name>.user': 'www-alice',
  'spawns.<name>.group': 'www-alice',
  'spawns.<name>.tenant': 'alice',
  'spawns.<name>.limits': '{ data: 1GiB, cpu: 60s, nofile: 1024, processes: 64 }',
  'spawns.<name>.limits.memory': '32GiB',
  'spawns.<name>.limits.data': '1GiB',
  'spawns.<name>.limits.cpu': '60s',
  'spawns.<name>.limits.nofile': '1024',
  'spawns.<name>.limits.processes': '64',
  tenants: '{ alice: { user: alice, group: alice } }',
  'tenants.<name>.user': 'alice',
  'tenants.<name>.group': 'alice',
  'tenants.<name>.limits': '{ data: 1GiB, processes: 32 }',
  'tenants.<name>.limits.memory': '32GiB',
  'tenants.<name>.limits.data': '1GiB',
  'tenants.<name>.limits.cpu': '120s',
  'tenants.<name>.limits.nofile': '4096',
  'tenants.<name>.limits.processes': '32',
  routes: '[{ match: { prefix: /api/ }, protocol: http, backends: [127.0.0.1:9000] }]',
  'routes[].name': 'php',
  'routes[].match': '{ host: "*.example.com", prefix: /app/, methods: [GET, POST] }',
  'routes[].match.host': '["example.com", "*.example.com"]',
  'routes[].match.prefix': '/api/',
  'routes[].match.extension': '.php',
  'routes[].match.glob': '"/static/**/*.css"',
  'routes[].match.regex': '"^/u/[0-9]+$"',
  'routes[].match.methods': '[GET, HEAD]',
  'routes[].protocol': 'fastcgi',
  'routes[].backends': '[10.0.0.1:9000, "unix:/run/php/php8.2-fpm.sock"]',
  'routes[].spawn': 'php',
  'routes[].balance': 'round-robin',
  'routes[].disableTime': '30s',
  'routes[].retries': '0',
  'routes[].maxConcurrent': '32',
  'routes[].queue': '128',
  'routes[].queueTimeout': '5s',
  'routes[].timeouts': '{ connect: 2s, headers: 30s, idle: 2m }',
  'routes[].timeouts.connect': '2s',
  'routes[].timeouts.headers': '30s',
  'routes[].timeouts.idle': '2m',
  'routes[].maxBodySize': '20MiB',
  'routes[].spoolLimit': '512MiB',
  'routes[].requestBuffering': 'false',
  'routes[].stripPrefix': 'true',
  'routes[].hostHeader': 'backend',
  'routes[].xForwarded': 'false',
  'routes[].forwarded': 'true',
  'routes[].via': 'proxycore',
  'routes[].docroot': '/srv/www',
  'routes[].scriptFilename': '/srv/app/app.py',
  'routes[].index': '[index.php]',
  'routes[].scriptExtensions': '[.php]',
  'routes[].symlinks': 'deny',
  'routes[].params': '{ REDIRECT_STATUS: "200" }',
  'routes[].localRedirects': 'true',
  'routes[].passAuthorization': 'true',
  'routes[].options': '{ maxConnections: 8 }',
  'routes[].xSendfile': '{ allow: [/srv/downloads] }',
  'routes[].xSendfile.allow': '[/srv/downloads, /var/cache/app]',
  'routes[].authorizer': '{ spawn: auth, scriptFilename: /srv/auth.php }',
  'routes[].authorizer.backends': '["unix:/run/php/auth.sock"]',
  'routes[].authorizer.spawn': 'auth',
  'routes[].authorizer.scriptFilename': '/srv/auth.php',
  'routes[].authorizer.timeout': '2s',
  'routes[].authorizer.options': '{ keepConn: false }',
  'routes[].timeouts.clientIdle': '30s',
  'routes[].timeouts.minUploadRate': '1KiB',
  'routes[].timeouts.uploadGrace': '20s',
  trustedProxies: '[127.0.0.1, "10.0.0.0/8"]',
  forwardedHeader: 'forwarded',
  serverName: 'www.example.com',
  maxResponseHeadSize: '128KiB',
}

/** For schema nodes without a description of their own (worth adding to the schema). */
const FALLBACK_DESCRIPTIONS = {
  'routes[].timeouts': 'Backend timeouts of this route; the core applies them to every protocol.',
}

/** Boilerplate the schema appends to every duration/size description; the type column says it. */
const UNIT_TAIL = /\s*(Duration: milliseconds, or "250ms", "60s", "5m", "1h"\.|Size: bytes, or "64KiB", "256MiB", "1GiB"\.)$/

const isDuration = (s) => s.anyOf?.some((a) => a.type === 'string' && typeof a.pattern === 'string' && a.pattern.includes('ms|s|m|h'))
const isSize = (s) => s.anyOf?.some((a) => a.type === 'string' && typeof a.pattern === 'string' && a.pattern.includes('kKmMgGtT'))

function typeOf (s) {
  if (isDuration(s)) return 'duration'
  if (isSize(s)) return 'size'
  if (s.anyOf !== undefined) {
    if (s.anyOf.every((a) => 'const' in a)) return s.anyOf.map((a) => `\`${a.const}\``).join(' | ')
    return s.anyOf.map(typeOf).join(' or ')
  }
  if (s.type === 'array') return `list of ${plural(typeOf(s.items ?? {}))}`
  if (s.type === 'object') return s.patternProperties !== undefined && s.properties === undefined ? 'map' : 'object'
  if (s.type === 'integer') return s.minimum !== undefined ? `integer ≥ ${s.minimum}` : 'integer'
  if ('const' in s) return `\`${s.const}\``
  if (s.type === 'string') return s.pattern === '^/' ? 'string (starts with `/`)' : 'string'
  if (s.type !== undefined) return String(s.type)
  return 'any (adapter-specific)'
}

function plural (t) {
  return t.replace(/^(string|integer|number|object|map)\b/, '$1s')
}

const cell = (s) => String(s).replace(/\|/g, '\\|').replace(/\n/g, ' ')
const code = (s) => `\`${s}\``

function defaultOf (s) {
  if (s.default === undefined) return '—'
  if (Array.isArray(s.default)) return code(`[${s.default.join(', ')}]`)
  return code(typeof s.default === 'string' && s.default === '' ? '""' : String(s.default))
}

function description (s) {
  return (s.description ?? '').replace(UNIT_TAIL, '').trim()
}

/** Sections in schema order: one per object that has properties of its own. */
function collect (schema) {
  const sections = []
  const missing = []
  const walk = (node, path, title, blurb) => {
    const rows = []
    const required = new Set(node.required ?? [])
    sections.push({ path, title, blurb, rows })
    for (const [key, child] of Object.entries(node.properties ?? {})) {
      const full = path === '' ? key : `${path}.${key}`
      const example = EXAMPLES[full]
      if (example === undefined && child.default === undefined) missing.push(full)
      const text = description(child) || FALLBACK_DESCRIPTIONS[full] || ''
      rows.push({ key: full, type: typeOf(child), required: required.has(key), default: defaultOf(child), example, description: text })
      const nested = nestedObject(child)
      if (nested !== null) walk(nested.node, `${full}${nested.suffix}`, `${full}${nested.suffix}`, description(nested.node) || text)
    }
  }
  walk(schema, '', 'Top level', 'The keys of the main file. Included files (`include`) may hold only `routes`, `spawns`, `tenants` and `include`.')
  return { sections: sections.filter((s) => s.rows.length > 0), missing }
}

function nestedObject (s) {
  if (s.type === 'object' && s.properties !== undefined) return { node: s, suffix: '' }
  if (s.type === 'object' && s.patternProperties !== undefined) {
    const inner = Object.values(s.patternProperties)[0]
    if (inner?.type === 'object' && inner.properties !== undefined) return { node: inner, suffix: '.<name>' }
  }
  if (s.type === 'array' && s.items?.type === 'object' && s.items.properties !== undefined) return { node: s.items, suffix: '[]' }
  return null
}

const anchor = (title) => title.toLowerCase().replace(/[^a-z0-9 -]/g, '').trim().replace(/ /g, '-')

export function render (schema) {
  const { sections, missing } = collect(schema)
  // A new key without an entry in EXAMPLES still gets its row (example: —); warn so one is added.
  if (missing.length > 0) process.emitWarning(`no example for ${missing.join(', ')}: add them to EXAMPLES in scripts/gen-config-doc.mjs`)
  const out = []
  out.push('# Configuration keys')
  out.push('')
  out.push('<!-- Generated by scripts/gen-config-doc.mjs from schema/proxycore.schema.json: edit the schema')
  out.push('     (src/config/schema.ts, src/config/spawn-schema.ts) and run `npm run schema && npm run docs:config`. -->')
  out.push('')
  out.push('Every key of `proxycore.yaml` (and of the object `createProxy()` takes), generated from the JSON')
  out.push('Schema. The rules that span several keys, includes and `${VAR}` substitution are in')
  out.push('[config.md](config.md). Check a file with `proxycore check proxycore.yaml`.')
  out.push('')
  out.push('- **duration**: milliseconds as a number, or a string such as `"250ms"`, `"60s"`, `"5m"`, `"1h"`, `"1d"`.')
  out.push('- **size**: bytes as a number, or a string such as `"64KiB"`, `"256MiB"`, `"1GiB"` (`KiB`, `K`: 1024; `KB`: 1000).')
  out.push('- `<name>` stands for a name you choose (`spawns.php`); `[]` for any entry of a list (`routes[0]`).')
  out.push('- **example** is a YAML value for that key; **default** is what applies when the key is absent (— = none).')
  out.push('')
  out.push('## Sections')
  out.push('')
  for (const s of sections) out.push(`- [${s.title}](#${anchor(s.title)})`)
  for (const s of sections) {
    out.push('')
    out.push(`## ${s.title}`)
    out.push('')
    if (s.blurb) { out.push(cell(s.blurb)); out.push('') }
    out.push('| key | type | default | example | description |')
    out.push('|---|---|---|---|---|')
    for (const r of s.rows) {
      const ex = r.example === undefined ? r.default : code(r.example)
      const key = `${code(r.key)}${r.required ? ' **(required)**' : ''}`
      out.push(`| ${key} | ${cell(r.type)} | ${cell(r.default)} | ${cell(ex)} | ${cell(r.description)} |`)
    }
  }
  out.push('')
  return out.join('\n')
}

if (process.argv[1] !== undefined && new URL(`file://${process.argv[1]}`).href === import.meta.url) {
  const text = render(JSON.parse(readFileSync(SCHEMA, 'utf8')))
  if (process.argv.includes('--stdout')) process.stdout.write(text)
  else writeFileSync(OUT, text)
}
