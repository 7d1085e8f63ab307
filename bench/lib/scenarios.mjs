/**
 * The scenarios. Each `setup(ctx)` starts what it needs and returns
 *   { targets: [{ id, label, url(size), rss: [{ pid, exclude }], proc }], skipped: [{ label, reason }] }
 * or { skip: reason } when proxycore cannot take part. Every target is its own process tree so its
 * CPU and RSS are its own. URLs encode the body size so one server serves both sizes.
 */
import { chmodSync, writeFileSync, mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { freePort, start } from './proc.mjs'
import { lighttpdConf, nginxConf, nginxLocations, phpFpmConf, uwsgiPython, which } from './peers.mjs'

const here = (p) => fileURLToPath(new URL(`../${p}`, import.meta.url))
const NODE = process.execPath
/**
 * Every Node proxy (proxycore and the npm peers alike) runs with the V8 flags `proxycore serve`
 * uses (its shebang and package.json `start`, and the flags it sets itself at start-up): a 2 MiB
 * young generation keeps RSS under load near the idle size; without allocation-site pretenuring
 * short-lived request objects stay out of the old generation; a first old-generation limit of
 * 16 MB and a fixed growing factor of 2 keep garbage from piling up to ~33 MB between two
 * mark-compacts; and WebAssembly (undici's llhttp: proxycore's HTTP adapter and the undici floor;
 * none of the other peers runs any) is compiled optimized, once, when the proxy is created; and
 * `gc` is exposed, which
 * proxycore uses to collect a large body's spent chunks every 8 MiB (`serve` takes the same
 * function without the flag; the peers never call it) (docs/getting-started.md "Memory and
 * speed").
 */
export const NODE_PROXY_FLAGS = ['--max-semi-space-size=1', '--initial-old-space-size=16', '--no-liftoff', '--no-wasm-lazy-compilation', '--no-allocation-site-pretenuring', '--heap-growing-percent=100', '--expose-gc']
/**
 * The environment `proxycore serve` sets for itself (the CLI's shebang): glibc keeps up to 16 MiB
 * of freed heap instead of handing it back to the kernel after every burst of freed 64 KiB socket
 * buffers and faulting it in again, and V8's background threads share that one heap instead of
 * each keeping up to 16 MiB of its own (docs/getting-started.md "Memory and speed"). Every Node
 * proxy gets it.
 */
export const NODE_PROXY_ENV = { MALLOC_TRIM_THRESHOLD_: '16777216', MALLOC_ARENA_MAX: '1' }

/** A Node proxy process: the same V8 flags and environment for proxycore and the npm peers. */
export function startNodeProxy (name, args, env = {}) {
  return start(name, NODE, [...NODE_PROXY_FLAGS, ...args], { env: { ...NODE_PROXY_ENV, ...env } })
}
/**
 * The Node floor (bench/servers/floor-*.mjs): per protocol, the least a Node proxy can do per
 * request — node:http in front, the backend protocol written and split by hand, no routing, no
 * checks, no timeouts. What separates proxycore from it is the price of its features; what
 * separates the floor from nginx or lighttpd is Node's own.
 */
const FLOOR_LABEL = 'the Node floor (hand-written, no features)'
/** The HTTP floor on undici: what proxycore's HTTP adapter costs on top of undici itself. */
const UNDICI_FLOOR_LABEL = 'the undici floor (node:http + undici Pool.dispatch, no features)'
const BACKENDS = /^(php-cgi|php-fpm.*|uwsgi|fcgiwrap|sh|bash|dash|cat|bench\.sh)$/

export const SIZES = [100, 65536]

/**
 * Start proxycore (its own node process) with `config`; `ctx.nodeArgs` = extra node arguments for
 * proxycore alone (--profile's --cpu-prof, --survivors' --import hook).
 */
export async function startProxycore (ctx, name, config, env = {}) {
  const file = join(ctx.tmp, `${name}.json`)
  writeFileSync(file, JSON.stringify(config))
  return startNodeProxy(name, [...(ctx.nodeArgs ?? []), here('servers/proxycore.mjs'), file, ...(ctx.module ? [ctx.module] : [])], env)
}

const nodeTarget = (id, label, proc, path = (n) => `/${n}`) => ({
  id, label, proc, url: (n) => `http://127.0.0.1:${proc.port}${path(n)}`, rss: [{ pid: proc.pid, exclude: BACKENDS }],
})

/** Try a peer; on failure record why it was skipped instead of failing the run. */
async function peer (out, id, label, startFn, path) {
  try {
    const proc = await startFn()
    out.targets.push(nodeTarget(id, label, proc, path))
  } catch (err) {
    out.skipped.push({ id, label, reason: String(err.message).split('\n')[0] })
  }
}

function missing (out, id, label, reason) { out.skipped.push({ id, label, reason }) }

// --- HTTP ---------------------------------------------------------------------------------

export const http = {
  id: 'http',
  title: 'HTTP reverse proxy → node:http backend',
  async setup (ctx) {
    const out = { targets: [], skipped: [] }
    const be = await start('backend', NODE, [here('servers/backend.mjs')])
    out.backend = be
    out.targets.push({ ...nodeTarget('direct', 'direct to the node:http backend (the limit)', be), direct: true })
    await peer(out, 'proxycore', 'proxycore (HTTP adapter)', () => startProxycore(ctx, 'proxycore-http', { routes: [{ protocol: 'http', backends: [`127.0.0.1:${be.port}`] }] }))
    if (ctx.smoke) return out
    await peer(out, 'http-proxy', 'http-proxy 1.18 + keep-alive agent', () => startNodeProxy('http-proxy', [here('servers/http-proxy.mjs'), String(be.port)]))
    await peer(out, 'http-proxy-3', 'http-proxy-3 1.x + keep-alive agent', () => startNodeProxy('http-proxy-3', [here('servers/http-proxy.mjs'), String(be.port), '3']))
    await peer(out, 'pipe', 'node:http pipe proxy + keep-alive agent', () => startNodeProxy('pipe', [here('servers/pipe.mjs'), String(be.port)]))
    await peer(out, 'floor', FLOOR_LABEL, () => startNodeProxy('floor-http', [here('servers/floor-http.mjs'), String(be.port)]))
    // undici's share of the distance to the floor: the same node:http front, undici's Pool behind
    // it as the HTTP adapter uses it, and a handler doing nothing else (bench/servers/floor-undici.mjs).
    await peer(out, 'floor-undici', UNDICI_FLOOR_LABEL, () => startNodeProxy('floor-undici', [here('servers/floor-undici.mjs'), String(be.port)]))
    const nginx = which('nginx')
    if (nginx) {
      await peer(out, 'nginx', 'nginx proxy_pass, upstream keepalive', async () => {
        const port = await freePort()
        return start('nginx', nginx, nginxConf(ctx.tmp, 'nginx-http', port, nginxLocations.proxy(be.port)).args, { ready: port })
      })
    } else missing(out, 'nginx', 'nginx proxy_pass', 'nginx not installed')
    const lighttpd = which('lighttpd')
    if (lighttpd) {
      await peer(out, 'lighttpd', 'lighttpd mod_proxy (connection per request)', async () => {
        const port = await freePort()
        return start('lighttpd', lighttpd, lighttpdConf(ctx.tmp, 'lighttpd-http', port, {
          modules: ['mod_proxy'], body: `proxy.server = ( "" => (( "host" => "127.0.0.1", "port" => ${be.port} )) )`,
        }).args, { ready: port })
      })
    } else missing(out, 'lighttpd', 'lighttpd mod_proxy', 'lighttpd not installed')
    return out
  },
  comparisons: [
    { peer: 'direct', label: 'direct (the limit)' },
    { peer: 'http-proxy', target: 1.5 },
    { peer: 'pipe', target: 1.2 },
    { peer: 'nginx', target: 0.5 },
    { peer: 'http-proxy-3' },
    { peer: 'lighttpd' },
    { peer: 'floor' },
    { peer: 'floor-undici' },
  ],
}

// --- shared CGI-family fixtures -------------------------------------------------------------

function www (ctx) {
  const root = join(ctx.tmp, 'www')
  mkdirSync(join(root, 'cgi-bin'), { recursive: true })
  for (const n of SIZES) writeFileSync(join(ctx.tmp, `body-${n}`), Buffer.alloc(n, 'x'))
  writeFileSync(join(root, 'bench.php'), "<?php header('Content-Type: text/plain'); echo str_repeat('x', (int)$_SERVER['QUERY_STRING']);\n")
  const sh = join(root, 'cgi-bin', 'bench.sh')
  writeFileSync(sh, `#!/bin/sh\ncase "$QUERY_STRING" in *[!0-9]*|'') QUERY_STRING=100;; esac\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\nexec cat "${ctx.tmp}/body-$QUERY_STRING"\n`)
  chmodSync(sh, 0o755)
  writeFileSync(join(root, 'app.py'), `
B = {}
def application(environ, start_response):
    q = environ.get('QUERY_STRING') or '100'
    n = int(q) if q.isdigit() else 100
    b = B.get(n)
    if b is None:
        b = B[n] = b'x' * n
    start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', str(n))])
    return [b]
`)
  return root
}

function adapterMissing (ctx, name) {
  return ctx.adapters.includes(name) ? null : `proxycore has no \`${name}\` adapter in dist/index.js yet`
}

// --- FastCGI → php-fpm ------------------------------------------------------------------------

export const fastcgi = {
  id: 'fastcgi',
  title: 'FastCGI → php-fpm (static pool of 4)',
  async setup (ctx) {
    const why = adapterMissing(ctx, 'fastcgi')
    if (why) return { skip: why }
    const fpmBin = which('phpFpm')
    if (!fpmBin) return { skip: 'php-fpm not installed' }
    const out = { targets: [], skipped: [] }
    const root = www(ctx)
    // One php-fpm per target, same settings: a FastCGI client that keeps connections open (proxycore,
    // nginx fastcgi_keep_conn) holds a php-fpm child per idle connection, so a shared pool would let
    // whichever target ran first starve the next one.
    out.extras = []
    const fpmFor = async (name) => {
      const fpm = phpFpmConf(ctx.tmp, name, 4)
      out.extras.push(await start(name, fpmBin, fpm.args, { ready: fpm.sock }))
      return fpm.sock
    }
    const path = (n) => `/bench.php?${n}`
    await peer(out, 'proxycore', 'proxycore (FastCGI adapter)', async () => startProxycore(ctx, 'proxycore-fastcgi', {
      // As docs/guides/php.md says: maxConnections = the pool's pm.max_children (php-fpm does not
      // announce it), so idle connections are kept instead of closed while others wait.
      routes: [{ protocol: 'fastcgi', backends: [`unix:${await fpmFor('fpm-proxycore')}`], docroot: root, options: { maxConnections: 4 } }],
    }), path)
    const nginx = which('nginx')
    if (nginx) {
      await peer(out, 'nginx', 'nginx fastcgi_pass (keepalive)', async () => {
        const port = await freePort()
        return start('nginx-fcgi', nginx, nginxConf(ctx.tmp, 'nginx-fastcgi', port, { ...nginxLocations.fastcgi(await fpmFor('fpm-nginx')), docroot: root }).args, { ready: port })
      }, path)
      await peer(out, 'nginx-conn', 'nginx fastcgi_pass (a connection per request, its default)', async () => {
        const port = await freePort()
        return start('nginx-fcgi-conn', nginx, nginxConf(ctx.tmp, 'nginx-fastcgi-conn', port, { ...nginxLocations.fastcgiPerRequest(await fpmFor('fpm-nginx-conn')), docroot: root }).args, { ready: port })
      }, path)
    } else {
      missing(out, 'nginx', 'nginx fastcgi_pass', 'nginx not installed')
      missing(out, 'nginx-conn', 'nginx fastcgi_pass (a connection per request, its default)', 'nginx not installed')
    }
    await peer(out, 'fastcgi-client', 'node:http + fastcgi-client 0.2', async () => startNodeProxy('fastcgi-client', [here('servers/fastcgi-client.mjs'), await fpmFor('fpm-fastcgi-client'), root]), path)
    await peer(out, 'floor', FLOOR_LABEL, async () => startNodeProxy('floor-fastcgi', [here('servers/floor-fastcgi.mjs'), await fpmFor('fpm-floor'), root, '4']), path)
    return out
  },
  comparisons: [{ peer: 'nginx', target: 1.0 }, { peer: 'nginx-conn' }, { peer: 'fastcgi-client', target: 2.5 }, { peer: 'floor' }],
}

// --- SCGI → uWSGI ---------------------------------------------------------------------------

export const scgi = {
  id: 'scgi',
  title: 'SCGI → uWSGI (4 processes)',
  async setup (ctx) {
    const why = adapterMissing(ctx, 'scgi')
    if (why) return { skip: why }
    const uwsgi = which('uwsgi')
    if (!uwsgi || !uwsgiPython()) return { skip: 'uwsgi or uwsgi-plugin-python3 not installed' }
    const out = { targets: [], skipped: [] }
    const root = www(ctx)
    const sock = join(ctx.tmp, 'uwsgi.sock')
    out.backend = await start('uwsgi', uwsgi, ['--plugin', 'python3', '--scgi-socket', sock, '--wsgi-file', join(root, 'app.py'),
      '--master', '--processes', '4', '--die-on-term', '--disable-logging', '--listen', '1024'], { ready: sock })
    const path = (n) => `/app?${n}`
    await peer(out, 'proxycore', 'proxycore (SCGI adapter)', () => startProxycore(ctx, 'proxycore-scgi', {
      routes: [{ protocol: 'scgi', backends: [`unix:${sock}`], scriptFilename: join(root, 'app.py') }],
    }), path)
    const lighttpd = which('lighttpd')
    if (lighttpd) {
      await peer(out, 'lighttpd', 'lighttpd mod_scgi', async () => {
        const port = await freePort()
        return start('lighttpd-scgi', lighttpd, lighttpdConf(ctx.tmp, 'lighttpd-scgi', port, {
          modules: ['mod_scgi'], docroot: root,
          body: `scgi.server = ( "/" => (( "socket" => "${sock}", "check-local" => "disable" )) )`,
        }).args, { ready: port })
      }, path)
    } else missing(out, 'lighttpd', 'lighttpd mod_scgi', 'lighttpd not installed')
    const nginx = which('nginx')
    if (nginx) {
      await peer(out, 'nginx', 'nginx scgi_pass', async () => {
        const port = await freePort()
        return start('nginx-scgi', nginx, nginxConf(ctx.tmp, 'nginx-scgi', port, { ...nginxLocations.scgi(sock), docroot: root }).args, { ready: port })
      }, path)
    } else missing(out, 'nginx', 'nginx scgi_pass', 'nginx not installed')
    await peer(out, 'floor', FLOOR_LABEL, () => startNodeProxy('floor-scgi', [here('servers/floor-scgi.mjs'), sock, join(root, 'app.py')]), path)
    return out
  },
  comparisons: [{ peer: 'lighttpd', target: 0.6 }, { peer: 'nginx' }, { peer: 'floor' }],
}

// --- CGI → shell script ---------------------------------------------------------------------

export const cgi = {
  id: 'cgi',
  title: 'CGI → shell script',
  async setup (ctx) {
    const why = adapterMissing(ctx, 'cgi')
    if (why) return { skip: why }
    const out = { targets: [], skipped: [] }
    const root = www(ctx)
    const path = (n) => `/cgi-bin/bench.sh?${n}`
    const config = {
      spawns: { cgi: { socketType: 'pipe', copyEnvironment: ['PATH'] } },
      routes: [{ protocol: 'cgi', spawn: 'cgi', docroot: root }],
    }
    // The fork server proxycore will run (the same lookup, the same environment): the compiled one
    // when npm install built it, and then the Perl one side by side, as on a machine without a C
    // compiler.
    const helper = (await import(new URL('../../dist/spawn/fork-server.js', import.meta.url).href)).findForkServer()?.kind
    const how = { compiled: 'compiled fork server', perl: 'Perl fork server' }[helper] ?? 'direct spawn'
    await peer(out, 'proxycore', `proxycore (CGI adapter, ${how})`, () => startProxycore(ctx, 'proxycore-cgi', config), path)
    if (helper === 'compiled') {
      await peer(out, 'perl', 'proxycore with the Perl fork server (PROXYCORE_FORK_SERVER=perl)',
        () => startProxycore(ctx, 'proxycore-cgi-perl', config, { PROXYCORE_FORK_SERVER: 'perl' }), path)
    }
    const lighttpd = which('lighttpd')
    if (lighttpd) {
      await peer(out, 'lighttpd', 'lighttpd mod_cgi', async () => {
        const port = await freePort()
        return start('lighttpd-cgi', lighttpd, lighttpdConf(ctx.tmp, 'lighttpd-cgi', port, {
          modules: ['mod_cgi'], docroot: root, body: 'cgi.assign = ( ".sh" => "" )',
        }).args, { ready: port })
      }, path)
    } else missing(out, 'lighttpd', 'lighttpd mod_cgi', 'lighttpd not installed')
    const nginx = which('nginx')
    const fcgiwrap = which('fcgiwrap')
    if (nginx && fcgiwrap) {
      const sock = join(ctx.tmp, 'fcgiwrap.sock')
      try {
        out.extras = [await start('fcgiwrap', fcgiwrap, ['-c', '4', '-s', `unix:${sock}`], { ready: sock })]
        await peer(out, 'nginx', 'nginx → fcgiwrap (4)', async () => {
          const port = await freePort()
          return start('nginx-cgi', nginx, nginxConf(ctx.tmp, 'nginx-cgi', port, { ...nginxLocations.fastcgiPerRequest(sock), docroot: root }).args, { ready: port })
        }, path)
      } catch (err) { missing(out, 'nginx', 'nginx → fcgiwrap', String(err.message).split('\n')[0]) }
    } else missing(out, 'nginx', 'nginx → fcgiwrap', 'nginx or fcgiwrap not installed')
    // proxycore's fork-server helper and lighttpd fork the scripts themselves (proc.mjs `tree`).
    for (const t of out.targets) if (['proxycore', 'perl', 'lighttpd'].includes(t.id)) t.rss[0].preExec = true
    return out
  },
  comparisons: [{ peer: 'lighttpd', target: 0.8 }, { peer: 'nginx' }, { peer: 'perl' }],
}

// --- spawned php-cgi --------------------------------------------------------------------------

export const spawn = {
  id: 'spawn',
  title: 'FastCGI → php-cgi spawned by the proxy (PHP_FCGI_CHILDREN=4)',
  async setup (ctx) {
    const why = adapterMissing(ctx, 'fastcgi')
    if (why) return { skip: why }
    const phpCgi = which('phpCgi')
    if (!phpCgi) return { skip: 'php-cgi not installed' }
    const out = { targets: [], skipped: [] }
    const root = www(ctx)
    const path = (n) => `/bench.php?${n}`
    const env = { PHP_FCGI_CHILDREN: '4', PHP_FCGI_MAX_REQUESTS: '0' }
    const config = {
      spawns: { php: { socketType: 'socket', binPath: phpCgi, socketName: join(ctx.tmp, 'pc-php.sock'), environment: env, minProcs: 1, maxProcs: 1 } },
      routes: [{ protocol: 'fastcgi', spawn: 'php', docroot: root }],
    }
    try {
      const proc = await startProxycore(ctx, 'proxycore-spawn', config)
      out.targets.push({ ...nodeTarget('proxycore', 'proxycore spawning php-cgi', proc, path), rss: [{ pid: proc.pid, exclude: /^php-cgi/ }] })
    } catch (err) {
      const msg = String(err.message)
      return { skip: /no spawn named|spawns/.test(msg) ? 'createProxy does not take `spawns:` yet (route `spawn: php` → "no spawn named")' : msg.split('\n')[0] }
    }
    const lighttpd = which('lighttpd')
    if (lighttpd) {
      await peer(out, 'lighttpd', 'lighttpd mod_fastcgi spawning php-cgi', async () => {
        const port = await freePort()
        return start('lighttpd-spawn', lighttpd, lighttpdConf(ctx.tmp, 'lighttpd-spawn', port, {
          modules: ['mod_fastcgi'], docroot: root,
          body: `fastcgi.server = ( ".php" => (( "bin-path" => "${phpCgi}", "socket" => "${join(ctx.tmp, 'lt-php.sock')}", "max-procs" => 1,
            "bin-environment" => ( "PHP_FCGI_CHILDREN" => "4", "PHP_FCGI_MAX_REQUESTS" => "0" ) )) )`,
        }).args, { ready: port })
      }, path)
      const t = out.targets.find((x) => x.id === 'lighttpd')
      if (t) t.rss = [{ pid: t.proc.pid, exclude: /^php-cgi/ }]
    } else missing(out, 'lighttpd', 'lighttpd mod_fastcgi', 'lighttpd not installed')
    // The FastCGI floor has no spawner: the bench starts its php-cgi, with the same environment,
    // and the floor keeps one connection per child, as proxycore does.
    await peer(out, 'floor', `${FLOOR_LABEL}, php-cgi started by the bench`, async () => {
      const sock = join(ctx.tmp, 'floor-php.sock')
      out.extras = [await start('php-cgi-floor', phpCgi, ['-b', sock], { env, ready: sock })]
      return startNodeProxy('floor-spawn', [here('servers/floor-fastcgi.mjs'), sock, root, env.PHP_FCGI_CHILDREN])
    }, path)
    return out
  },
  comparisons: [{ peer: 'lighttpd', target: 0.9 }, { peer: 'floor' }],
}

// --- static files ---------------------------------------------------------------------------

/** The static scenario's files: `<size>.txt` of `x`s, the bodies of the other scenarios. */
function staticRoot (ctx) {
  const root = join(ctx.tmp, 'static')
  mkdirSync(root, { recursive: true })
  for (const n of SIZES) writeFileSync(join(root, `${n}.txt`), Buffer.alloc(n, 'x'))
  return root
}

export const staticFiles = {
  id: 'static',
  title: 'Static files from a docroot',
  note: 'No backend, so no "direct" row: every server opens and reads the same files (`<size>.txt`, ' +
    'in a docroot the bench creates in its temp dir) itself. nginx (`root`, one worker) and lighttpd ' +
    '(mod_staticfile) run with their defaults: nginx without `sendfile` and without `open_file_cache` ' +
    '(open, fstat, pread, writev, close per request), lighttpd with its stat cache, which keeps the ' +
    'file open between requests (a stat and a pread per request; sendfile for the 64 KiB file); both ' +
    'send an ETag. The Node floor ' +
    '(bench/servers/floor-static.mjs) opens, fstats and streams the file with Content-Type, ' +
    'Content-Length and Last-Modified and nothing else: no ETag, conditional requests, ranges, ' +
    'dot-file or symlink checks, and no re-check of the opened descriptor. There is no target for ' +
    'this scenario: the ratios are shown, not judged.',
  async setup (ctx) {
    const why = adapterMissing(ctx, 'static')
    if (why) return { skip: why }
    const out = { targets: [], skipped: [] }
    const root = staticRoot(ctx)
    const path = (n) => `/${n}.txt`
    await peer(out, 'proxycore', 'proxycore (static adapter)', () => startProxycore(ctx, 'proxycore-static', {
      routes: [{ protocol: 'static', docroot: root }],
    }), path)
    const nginx = which('nginx')
    if (nginx) {
      await peer(out, 'nginx', 'nginx root', async () => {
        const port = await freePort()
        return start('nginx-static', nginx, nginxConf(ctx.tmp, 'nginx-static', port, { location: 'location / { }', docroot: root }).args, { ready: port })
      }, path)
    } else missing(out, 'nginx', 'nginx root', 'nginx not installed')
    const lighttpd = which('lighttpd')
    if (lighttpd) {
      await peer(out, 'lighttpd', 'lighttpd mod_staticfile', async () => {
        const port = await freePort()
        return start('lighttpd-static', lighttpd, lighttpdConf(ctx.tmp, 'lighttpd-static', port, {
          modules: ['mod_staticfile'], docroot: root, body: 'mimetype.assign = ( ".txt" => "text/plain; charset=utf-8" )',
        }).args, { ready: port })
      }, path)
    } else missing(out, 'lighttpd', 'lighttpd mod_staticfile', 'lighttpd not installed')
    await peer(out, 'floor', FLOOR_LABEL, () => startNodeProxy('floor-static', [here('servers/floor-static.mjs'), root]), path)
    return out
  },
  // No target (the issue sets none): the ratios and the RSS are shown, never judged.
  comparisons: [{ peer: 'nginx' }, { peer: 'lighttpd' }, { peer: 'floor' }],
  rssTarget: null,
}

export const ALL = [http, fastcgi, scgi, cgi, spawn, staticFiles]
