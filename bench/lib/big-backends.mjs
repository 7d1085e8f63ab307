/**
 * The --big backends, one per proxycore adapter (FastCGI twice: php-fpm and php-cgi). Each
 * `start(ctx, dir)` starts what the backend needs (registered with proc.mjs, so killAll stops it)
 * and returns the proxycore config for it:
 *   { config, upload: path, download: (n) => path, pattern: 'gen' | 'seq', procs: [proc], exclude, preExec }
 * Uploads are answered with "<sha256> [<bytes>]" of what the backend read; downloads are n bytes
 * of `pattern`: 'gen' = lib/gen.mjs (PHP and Python reproduce it), 'seq' = `seq 1 inf` (lib/seq.mjs).
 * `exclude` (a comm regex) keeps processes that proxycore forks for the backend (CGI scripts) out of
 * its RSS; `preExec` also leaves out the scripts before their exec (proc.mjs `tree`).
 */
import { chmodSync, copyFileSync, existsSync, mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { start } from './proc.mjs'
import { phpFpmConf, uwsgiPython, which } from './peers.mjs'

const server = (f) => fileURLToPath(new URL(`../servers/${f}`, import.meta.url))

/** Both PHP backends run bench/servers/big.php the same way; only the process differs. */
const phpBackend = (sock, root, proc) => ({
  config: { routes: [{ protocol: 'fastcgi', backends: [`unix:${sock}`], docroot: root }] },
  upload: '/big.php', download: (n) => `/big.php?${n}`, pattern: 'gen', procs: [proc], exclude: null,
})

/**
 * enable_post_data_reading=Off: PHP otherwise reads the whole body into php://temp before the
 * script runs (and applies post_max_size, 8 MiB by default, to it); with it off php://input reads
 * the FastCGI stdin stream on demand. post_max_size=0 = no limit, max_execution_time=0 = none.
 */
const PHP_INI = [['enable_post_data_reading', '0'], ['post_max_size', '0'], ['max_execution_time', '0'], ['memory_limit', '128M'], ['output_buffering', '0']]

function docroot (dir) {
  const root = join(dir, 'www')
  mkdirSync(join(root, 'cgi-bin'), { recursive: true })
  copyFileSync(server('big.php'), join(root, 'big.php'))
  copyFileSync(server('big.sh'), join(root, 'cgi-bin', 'big.sh'))
  chmodSync(join(root, 'cgi-bin', 'big.sh'), 0o755)
  return root
}

export const BIG_BACKENDS = [
  {
    id: 'http',
    adapter: 'http',
    label: 'node:http backend',
    need: () => null,
    async start () {
      const be = await start('big-backend', process.execPath, [server('backend.mjs')])
      return { config: { routes: [{ protocol: 'http', backends: [`127.0.0.1:${be.port}`] }] }, upload: '/upload', download: (n) => `/download/${n}`, pattern: 'gen', procs: [be], exclude: null }
    },
  },
  {
    id: 'php-fpm',
    adapter: 'fastcgi',
    label: 'php-fpm (1 child), php://input / echo + flush',
    need: () => which('phpFpm') ? null : 'php-fpm not installed',
    async start (ctx, dir) {
      const root = docroot(dir)
      // One static child, with the PHP settings that let a 1 GiB body stream through php://input.
      const fpm = phpFpmConf(dir, 'fpm', 1, ['request_terminate_timeout = 0', ...PHP_INI.map(([k, v]) => `php_admin_value[${k}] = ${v}`)])
      const p = await start('big-php-fpm', which('phpFpm'), fpm.args, { ready: fpm.sock })
      return phpBackend(fpm.sock, root, p)
    },
  },
  {
    id: 'php-cgi',
    adapter: 'fastcgi',
    label: 'php-cgi -b (PHP_FCGI_CHILDREN=1), php://input / echo + flush',
    need: () => which('phpCgi') ? null : 'php-cgi not installed',
    async start (ctx, dir) {
      const root = docroot(dir)
      const sock = join(dir, 'php-cgi.sock')
      const p = await start('big-php-cgi', which('phpCgi'), ['-n', ...PHP_INI.flatMap(([k, v]) => ['-d', `${k}=${v}`]), '-b', sock], {
        ready: sock, env: { PHP_FCGI_CHILDREN: '1', PHP_FCGI_MAX_REQUESTS: '0' },
      })
      return phpBackend(sock, root, p)
    },
  },
  {
    id: 'uwsgi',
    adapter: 'scgi',
    label: 'uWSGI --scgi-socket, python3 WSGI app (1 process)',
    need: () => which('uwsgi') && uwsgiPython() ? null : 'uwsgi or uwsgi-plugin-python3 not installed',
    async start (ctx, dir) {
      mkdirSync(dir, { recursive: true })
      const app = join(dir, 'big_app.py')
      copyFileSync(server('big_app.py'), app)
      const sock = join(dir, 'uwsgi.sock')
      const p = await start('big-uwsgi', which('uwsgi'), ['--plugin', 'python3', '--scgi-socket', sock, '--wsgi-file', app,
        '--master', '--processes', '1', '--die-on-term', '--disable-logging'], { ready: sock })
      return { config: { routes: [{ protocol: 'scgi', backends: [`unix:${sock}`], scriptFilename: app }] }, upload: '/big', download: (n) => `/big?${n}`, pattern: 'gen', procs: [p], exclude: null }
    },
  },
  {
    id: 'cgi',
    adapter: 'cgi',
    label: 'sh script (pipe spawn): sha256sum of stdin, seq output',
    need: () => ['/bin/sh', '/usr/bin/seq', '/usr/bin/sha256sum', '/usr/bin/head'].every((p) => existsSync(p)) ? null : 'sh, seq, head or sha256sum missing',
    async start (ctx, dir) {
      const root = docroot(dir)
      return {
        config: { spawns: { cgi: { socketType: 'pipe', copyEnvironment: ['PATH'] } }, routes: [{ protocol: 'cgi', spawn: 'cgi', docroot: root }] },
        upload: '/cgi-bin/big.sh', download: (n) => `/cgi-bin/big.sh?${n}`, pattern: 'seq', procs: [],
        exclude: /^(sh|dash|bash|big\.sh|seq|head|sha256sum)$/, preExec: true,
      }
    },
  },
]
