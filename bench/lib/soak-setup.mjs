/**
 * The soak's world (docs/soak.md): a temp dir with the backend scripts, php-fpm and uWSGI (SCGI)
 * started by the soak, and `proxycore serve` with a generated config whose spawns are php-cgi
 * (FastCGI, socket), three fcgiwrap (FastCGI, one per socket), the Node HTTP backend and a pipe
 * spawn for the shell CGI. Every process goes through proc.mjs `start`, so killAll stops it.
 *
 * Each backend answers the same three requests (bench/servers/big.* do the first two):
 *   POST        → "<sha256> <bytes>" of the body it read (the shell script: "<sha256>")
 *   GET ?N      → N bytes: lib/gen.mjs (PHP, Python, Node) or `seq 1 inf` (shell: lib/seq.mjs)
 *   GET ?slow   → answers after 6 s, past the route's 3 s headers timeout
 */
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { connectable, sleep, start } from './proc.mjs'
import { phpFpmConf, uwsgiPython, which } from './peers.mjs'

const here = (p) => fileURLToPath(new URL(p, import.meta.url))
export const REPO = here('../../')
export const CLI = join(REPO, 'dist', 'cli', 'main.js')
export const SLOW_SECONDS = 6
export const HEADERS_TIMEOUT = '3s'

/** The six adapters: route prefix, script path under it, which digest a GET has, and who starts it. */
export const ADAPTERS = [
  { id: 'php-fpm', prefix: '/fpm/', script: 'soak.php', pattern: 'gen', by: 'soak' },
  { id: 'php-cgi', prefix: '/phpcgi/', script: 'soak.php', pattern: 'gen', by: 'proxycore' },
  { id: 'fcgiwrap', prefix: '/fcgiwrap/', script: 'soak.sh', pattern: 'seq', by: 'proxycore' },
  { id: 'cgi', prefix: '/cgi-bin/', script: 'soak.sh', pattern: 'seq', by: 'proxycore' },
  { id: 'uwsgi-scgi', prefix: '/scgi/', script: 'app', pattern: 'gen', by: 'soak' },
  { id: 'node-http', prefix: '/node/', script: 'app', pattern: 'gen', by: 'proxycore' },
]

/** Processes proxycore keeps running for its spawns (by comm), checked at every sample. */
export const PHP_CGI_CHILDREN = 3
export const FCGIWRAP_COUNT = 3
/**
 * The comm of a Node process: `node`, but from Node 24 on the name of its main thread,
 * `MainThread`. The Node backend runs on the soak's own node binary, so it is the soak's own.
 */
export const NODE_COMM = (() => { const s = readFileSync('/proc/self/stat', 'utf8'); return s.slice(s.indexOf('(') + 1, s.lastIndexOf(')')) })()
export const SPAWNED = { 'php-cgi': 1 + PHP_CGI_CHILDREN, fcgiwrap: FCGIWRAP_COUNT, [NODE_COMM]: 1 }
/** Per-request processes (CGI scripts and what they run): never part of the expected count. */
export const TRANSIENT = /^(sh|dash|bash|soak\.sh|seq|head|sha256sum|sleep|cat|setpriv)$/
export const FPM_CHILDREN = 4
export const UWSGI_PROCESSES = 4

export function missingPeers () {
  const out = []
  if (!which('phpFpm')) out.push('php-fpm not installed')
  if (!which('phpCgi')) out.push('php-cgi not installed')
  if (!which('fcgiwrap')) out.push('fcgiwrap not installed')
  if (!which('uwsgi') || !uwsgiPython()) out.push('uwsgi or uwsgi-plugin-python3 not installed')
  for (const b of ['/bin/sh', '/usr/bin/seq', '/usr/bin/head', '/usr/bin/sha256sum']) {
    if (!existsSync(b)) out.push(`${b} missing`)
  }
  return out
}

const PHP = `<?php
if (($_SERVER['QUERY_STRING'] ?? '') === 'slow') { sleep(${SLOW_SECONDS}); header('Content-Type: text/plain'); echo "late\\n"; exit; }
${readFileSync(here('../servers/big.php'), 'utf8').replace(/^<\?php\n/, '')}`

const SH = `#!/bin/sh
if [ "$QUERY_STRING" = slow ]; then sleep ${SLOW_SECONDS}; printf 'Content-Type: text/plain\\r\\n\\r\\nlate\\n'; exit 0; fi
${readFileSync(here('../servers/big.sh'), 'utf8').replace(/^#!.*\n/, '')}`

const PY = readFileSync(here('../servers/big_app.py'), 'utf8').replace('def application(environ, start_response):\n',
  `def application(environ, start_response):
    if environ.get('QUERY_STRING') == 'slow':
        import time
        time.sleep(${SLOW_SECONDS})
        start_response('200 OK', [('Content-Type', 'text/plain')])
        return [b'late\\n']
`)

/** enable_post_data_reading=Off: php://input streams the body (bench/lib/big-backends.mjs). */
const PHP_INI = [['enable_post_data_reading', '0'], ['post_max_size', '0'], ['max_execution_time', '0'], ['memory_limit', '128M'], ['output_buffering', '0']]

function writeTree (dir) {
  const www = join(dir, 'www')
  for (const d of ['fpm', 'phpcgi', 'fcgiwrap', 'cgi-bin']) mkdirSync(join(www, d), { recursive: true })
  writeFileSync(join(www, 'fpm', 'soak.php'), PHP)
  writeFileSync(join(www, 'phpcgi', 'soak.php'), PHP)
  for (const d of ['fcgiwrap', 'cgi-bin']) {
    writeFileSync(join(www, d, 'soak.sh'), SH)
    chmodSync(join(www, d, 'soak.sh'), 0o755)
  }
  writeFileSync(join(dir, 'app.py'), PY)
  mkdirSync(join(dir, 'run'), { recursive: true })
  return www
}

/** The proxycore config (JSON is YAML) for `serve`. */
export function proxyConfig (dir, www, fpmSock, uwsgiSock) {
  const restart = { maxStarts: 100, window: '60s' }
  const timeouts = { headers: HEADERS_TIMEOUT }
  const run = (n) => join(dir, 'run', n)
  return {
    listen: '127.0.0.1:0',
    logLevel: 'info',
    drainTimeout: '5s',
    spawns: {
      phpcgi: {
        binPath: [which('phpCgi'), '-n', ...PHP_INI.flatMap(([k, v]) => ['-d', `${k}=${v}`])],
        socketName: run('php-cgi.sock'),
        environment: { PHP_FCGI_CHILDREN: String(PHP_CGI_CHILDREN), PHP_FCGI_MAX_REQUESTS: '0' },
        stopTimeout: '2s',
        restart,
      },
      fcgiwrap: {
        binPath: which('fcgiwrap'),
        socketName: Array.from({ length: FCGIWRAP_COUNT }, (_, i) => run(`fcgiwrap-${i}.sock`)),
        copyEnvironment: ['PATH'],
        stopTimeout: '2s',
        restart,
      },
      node: {
        binPath: [process.execPath, here('soak-node-backend.mjs')],
        socketName: run('node.sock'),
        stopTimeout: '2s',
        restart,
      },
      cgi: { socketType: 'pipe', copyEnvironment: ['PATH'] },
    },
    routes: [
      { name: 'php-fpm', match: { prefix: '/fpm/' }, protocol: 'fastcgi', backends: [`unix:${fpmSock}`], docroot: www, options: { maxConnections: FPM_CHILDREN }, timeouts },
      { name: 'php-cgi', match: { prefix: '/phpcgi/' }, protocol: 'fastcgi', spawn: 'phpcgi', docroot: www, timeouts },
      { name: 'fcgiwrap', match: { prefix: '/fcgiwrap/' }, protocol: 'fastcgi', spawn: 'fcgiwrap', docroot: www, timeouts },
      { name: 'cgi', match: { prefix: '/cgi-bin/' }, protocol: 'cgi', spawn: 'cgi', docroot: www, timeouts },
      { name: 'uwsgi-scgi', match: { prefix: '/scgi/' }, protocol: 'scgi', backends: [`unix:${uwsgiSock}`], scriptFilename: join(dir, 'app.py'), timeouts },
      { name: 'node-http', match: { prefix: '/node/' }, protocol: 'http', spawn: 'node', timeouts },
    ],
  }
}

/** The V8 flags and environment of proxycore's shebang (package.json `start`). */
const SERVE_FLAGS = ['--max-semi-space-size=1', '--initial-old-space-size=16']
const SERVE_ENV = { MALLOC_TRIM_THRESHOLD_: '16777216', MALLOC_ARENA_MAX: '1', PROXYCORE_LOG_FORMAT: 'json' }

/**
 * Start everything in `dir`. Returns { fpm, uwsgi, proxy, port, logLines, www }; `logLines` fills
 * with proxycore's JSON log lines (all of them, not only proc.mjs's first 50 KB).
 */
export async function startWorld (dir, { startTimeoutMs = 60_000 } = {}) {
  const www = writeTree(dir)
  const fpmConf = phpFpmConf(dir, 'fpm', FPM_CHILDREN, PHP_INI.map(([k, v]) => `php_admin_value[${k}] = ${v}`))
  const fpm = await start('soak-php-fpm', which('phpFpm'), fpmConf.args, { ready: fpmConf.sock, timeoutMs: startTimeoutMs })
  const uwsgiSock = join(dir, 'uwsgi.sock')
  const uwsgi = await start('soak-uwsgi', which('uwsgi'), ['--plugin', 'python3', '--scgi-socket', uwsgiSock, '--wsgi-file', join(dir, 'app.py'),
    '--master', '--processes', String(UWSGI_PROCESSES), '--die-on-term', '--disable-logging', '--listen', '128'], { ready: uwsgiSock, timeoutMs: startTimeoutMs })
  const cfgFile = join(dir, 'proxycore.yaml')
  writeFileSync(cfgFile, JSON.stringify(proxyConfig(dir, www, fpmConf.sock, uwsgiSock), null, 2))
  const proxy = await start('soak-proxycore', process.execPath, [...SERVE_FLAGS, CLI, 'serve', cfgFile], { env: SERVE_ENV, cwd: REPO, ready: null })
  const logLines = []
  let buf = ''
  proxy.child.stderr.on('data', (c) => {
    buf += c.toString()
    let nl
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl)
      buf = buf.slice(nl + 1)
      try { logLines.push(JSON.parse(line)) } catch { logLines.push({ msg: line, raw: true }) }
    }
  })
  const exited = new Promise((resolve) => proxy.child.once('exit', (code, signal) => resolve({ code, signal })))
  const deadline = Date.now() + startTimeoutMs
  let port = 0
  for (;;) {
    const serving = logLines.find((l) => l.msg === 'serving')
    if (serving) { port = Number(/:(\d+)$/.exec(serving.addresses[0])[1]); break }
    if (proxy.child.exitCode !== null || proxy.child.signalCode !== null) throw new Error(`proxycore exited before serving:\n${logLines.map((l) => JSON.stringify(l)).join('\n')}`)
    if (Date.now() > deadline) throw new Error(`proxycore did not serve within ${startTimeoutMs} ms`)
    await sleep(25)
  }
  if (!(await connectable(port))) throw new Error('proxycore logged serving but its port refuses')
  return { fpm, uwsgi, proxy, port, logLines, www, exited, cfgFile }
}
