/**
 * Generated configs for the third-party peers (nginx, lighttpd, php-fpm, uWSGI, fcgiwrap), each
 * writing pid/logs/temp files into its own directory under the run's temp dir.
 */
import { existsSync, mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

export const BIN = {
  nginx: ['/usr/sbin/nginx', '/usr/local/sbin/nginx', '/usr/local/nginx/sbin/nginx'],
  lighttpd: ['/usr/sbin/lighttpd', '/usr/local/sbin/lighttpd'],
  phpFpm: ['/usr/sbin/php-fpm8.2', '/usr/sbin/php-fpm', '/usr/local/sbin/php-fpm'],
  phpCgi: ['/usr/bin/php-cgi', '/usr/local/bin/php-cgi'],
  uwsgi: ['/usr/bin/uwsgi', '/usr/local/bin/uwsgi'],
  fcgiwrap: ['/usr/sbin/fcgiwrap', '/usr/bin/fcgiwrap'],
}

export function which (name) {
  for (const p of BIN[name] ?? []) if (existsSync(p)) return p
  return null
}

export const LIGHTTPD_MODULES = ['/usr/lib/lighttpd', '/usr/local/lib/lighttpd', '/usr/lib64/lighttpd'].find((d) => existsSync(d)) ?? '/usr/lib/lighttpd'

export function uwsgiPython () {
  return ['/usr/lib/uwsgi/plugins/python3_plugin.so', '/usr/lib/uwsgi/python3_plugin.so'].some((p) => existsSync(p))
}

function dirFor (tmp, name) {
  const d = join(tmp, name)
  mkdirSync(join(d, 'tmp'), { recursive: true })
  return d
}

const FASTCGI_PARAMS = `
      fastcgi_param GATEWAY_INTERFACE CGI/1.1;
      fastcgi_param SERVER_SOFTWARE nginx;
      fastcgi_param QUERY_STRING $query_string;
      fastcgi_param REQUEST_METHOD $request_method;
      fastcgi_param CONTENT_TYPE $content_type;
      fastcgi_param CONTENT_LENGTH $content_length;
      fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;
      fastcgi_param SCRIPT_NAME $fastcgi_script_name;
      fastcgi_param REQUEST_URI $request_uri;
      fastcgi_param DOCUMENT_URI $document_uri;
      fastcgi_param DOCUMENT_ROOT $document_root;
      fastcgi_param SERVER_PROTOCOL $server_protocol;
      fastcgi_param REMOTE_ADDR $remote_addr;
      fastcgi_param REMOTE_PORT $remote_port;
      fastcgi_param SERVER_ADDR $server_addr;
      fastcgi_param SERVER_PORT $server_port;
      fastcgi_param SERVER_NAME $server_name;`

const SCGI_PARAMS = FASTCGI_PARAMS.replaceAll('fastcgi_param', 'scgi_param').replace(/.*SCRIPT_FILENAME.*\n/, '')
  .replace('$fastcgi_script_name', '$uri')

/**
 * nginx with one worker (like the one Node process it is compared with). `location` is the body
 * of `location / {}` (or a full set of locations when `raw`).
 */
export function nginxConf (tmp, name, port, { upstream = '', location, docroot = tmp }) {
  const d = dirFor(tmp, name)
  // As root nginx's workers default to `nobody`, who cannot enter the 0700 temp dir or its sockets.
  const user = process.getuid?.() === 0 ? 'user root;' : ''
  const conf = `
${user}
worker_processes 1;
pid ${d}/nginx.pid;
error_log ${d}/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${d}/tmp/body;
  proxy_temp_path ${d}/tmp/proxy;
  fastcgi_temp_path ${d}/tmp/fastcgi;
  scgi_temp_path ${d}/tmp/scgi;
  uwsgi_temp_path ${d}/tmp/uwsgi;
  keepalive_requests 1000000;
  ${upstream}
  server {
    listen 127.0.0.1:${port};
    root ${docroot};
    ${location}
  }
}
`
  writeFileSync(join(d, 'nginx.conf'), conf)
  return { args: ['-p', d, '-c', join(d, 'nginx.conf'), '-e', join(d, 'error.log'), '-g', 'daemon off;'] }
}

export const nginxLocations = {
  proxy: (backendPort) => ({
    upstream: `upstream be { server 127.0.0.1:${backendPort}; keepalive 64; keepalive_requests 1000000; }`,
    location: 'location / { proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection ""; }',
  }),
  // Kept-alive connections. nginx caps only the idle ones (`keepalive`), not how many it opens, and
  // open-source nginx cannot queue a request for a busy upstream (max_conns without the commercial
  // `queue` fails it), so under 32 connections it opens one per request in flight: php-fpm's
  // workers each keep one and the rest wait in the listen backlog (p99 > 1 s, docs/benchmarks.md).
  fastcgi: (sock) => ({
    upstream: `upstream fcgi { server unix:${sock}; keepalive 16; }`,
    location: `location / { fastcgi_pass fcgi; fastcgi_keep_conn on; ${FASTCGI_PARAMS} }`,
  }),
  // nginx's default: a new connection per request, closed by the FastCGI server after its answer.
  fastcgiPerRequest: (sock) => ({
    upstream: `upstream fcgi { server unix:${sock}; }`,
    location: `location / { fastcgi_pass fcgi; ${FASTCGI_PARAMS} }`,
  }),
  scgi: (sock) => ({
    upstream: `upstream scgi_be { server unix:${sock}; }`,
    location: `location / { scgi_pass scgi_be; ${SCGI_PARAMS} }`,
  }),
}

/** lighttpd.conf; `body` holds the module settings. Run with `-D -f conf -m modules`. */
export function lighttpdConf (tmp, name, port, { modules, body, docroot = tmp }) {
  const d = dirFor(tmp, name)
  const conf = `
server.document-root = "${docroot}"
server.bind = "127.0.0.1"
server.port = ${port}
server.pid-file = "${d}/lighttpd.pid"
server.errorlog = "${d}/error.log"
server.upload-dirs = ( "${d}/tmp" )
server.max-keep-alive-requests = 1000000
server.max-keep-alive-idle = 60
server.modules = ( ${modules.map((m) => `"${m}"`).join(', ')} )
${body}
`
  writeFileSync(join(d, 'lighttpd.conf'), conf)
  return { args: ['-D', '-f', join(d, 'lighttpd.conf'), '-m', LIGHTTPD_MODULES] }
}

/** php-fpm with a static pool of `children` on a unix socket; `extra` = more pool lines. */
export function phpFpmConf (tmp, name, children = 4, extra = []) {
  const d = dirFor(tmp, name)
  const sock = join(d, 'fpm.sock')
  const root = process.getuid?.() === 0
  writeFileSync(join(d, 'php-fpm.conf'), `
[global]
pid = ${d}/php-fpm.pid
error_log = ${d}/error.log
daemonize = no
[bench]
listen = ${sock}
pm = static
pm.max_children = ${children}
pm.max_requests = 0
catch_workers_output = no
${extra.join('\n')}
`)
  return { sock, args: ['-F', '-n', '-y', join(d, 'php-fpm.conf'), ...(root ? ['-R'] : [])] }
}
