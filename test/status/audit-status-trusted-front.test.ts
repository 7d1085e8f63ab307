/**
 * The status page behind a front proxy the proxy trusts (`trustedProxies`): real nginx on loopback
 * in front, appending the client to X-Forwarded-For as nginx's `$proxy_add_x_forwarded_for` does.
 * Every request nginx forwards has nginx's address as its socket peer; were access decided on that
 * peer alone, the default loopback-only page would be open to every client of nginx. With the
 * proxy's trusted list the client nginx forwards for must be allowed too; headers still never grant
 * access (the peer must be allowed itself), and an untrusted peer's header is never read.
 */
import t from 'tap'
import { spawn } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import WebSocket from 'ws'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { freePort } from '../helpers/ports.js'
import { havePeer } from '../fastcgi/helpers/peers.js'
import { backend } from '../helpers/servers.js'
import { tempDir } from '../helpers/tmp.js'
import { createProxy, silentLogger } from '../../src/index.js'
import { createStatus } from '../../src/status/index.js'
import { fetchText, statusRig } from './harness.js'

/** nginx (one process, foreground) on 127.0.0.1:`port`, proxying everything to `upstream` from 127.0.0.1. */
async function frontNginx (t: Parameters<typeof guardLeaks>[0] & { teardown (fn: () => void | Promise<void>): void }, upstream: number): Promise<number> {
  const dir = tempDir(t, 'audit-status-nginx-')
  const port = await freePort()
  const conf = join(dir, 'nginx.conf')
  writeFileSync(conf, `daemon off; master_process off; worker_processes 1; pid ${dir}/nginx.pid; error_log ${dir}/error.log;
events { worker_connections 64; }
http {
  access_log off; client_body_temp_path ${dir}/body; proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fcgi; uwsgi_temp_path ${dir}/uwsgi; scgi_temp_path ${dir}/scgi;
  server {
    listen 127.0.0.1:${port};
    location / {
      proxy_pass http://127.0.0.1:${upstream};
      proxy_bind 127.0.0.1;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    }
  }
}
`)
  const child = spawn('nginx', ['-p', dir, '-c', conf], { stdio: ['ignore', 'ignore', 'pipe'] })
  let stderr = ''
  child.stderr.on('data', (c: Buffer) => { stderr += String(c) })
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  t.teardown(async () => { child.kill('SIGQUIT'); await exited })
  const up = await waitFor(async () => {
    if (child.exitCode !== null) throw new Error(`nginx exited: ${stderr}`)
    try { return (await fetchText(`http://127.0.0.1:${port}/ping`)).status === 200 } catch { return false }
  }, 10_000, 25)
  if (!up) throw new Error(`nginx did not answer: ${stderr}`)
  return port
}

t.test('through a trusted front proxy, the client it forwards for must be allowed too, not only its address', async (t) => {
  guardLeaks(t)
  if (!havePeer(t, '/usr/sbin/nginx')) return
  const be = await backend(t, (_req, res) => { res.end('app') })
  // Only 127.0.0.1 may see status; nginx connects from 127.0.0.1 and is the proxy's trusted peer.
  const trusted = ['127.0.0.1']
  const rig = await statusRig(t, {
    trustedProxies: trusted,
    routes: [{ name: 'app', match: { prefix: '/' }, protocol: 'http', backends: [be.address] }],
  }, { allow: ['127.0.0.1'], trustedProxies: trusted })
  const front = await frontNginx(t, rig.port)
  const via = `http://127.0.0.1:${front}`

  // A client of nginx at 127.0.0.2: nginx's X-Forwarded-For says so; refused on every status path.
  for (const p of ['/server-status', '/server-status?format=json', '/metrics', '//server-status']) {
    const r = await fetchText(`${via}${p}`, { localAddress: '127.0.0.2' })
    t.equal(r.status, 403, `${p} from 127.0.0.2 through nginx`)
    t.notMatch(r.body, /proxycore_|"routes"|<table/, 'no status data')
  }
  // It cannot claim an allowed address: nginx appends the real one, the walk stops there.
  const spoof = await fetchText(`${via}/server-status`, { localAddress: '127.0.0.2', headers: { 'x-forwarded-for': '127.0.0.1' } })
  t.equal(spoof.status, 403, 'X-Forwarded-For: 127.0.0.1 from 127.0.0.2, through nginx')
  // The allowed client through nginx, and the proxy's other paths, still work.
  t.equal((await fetchText(`${via}/server-status?format=json`, { localAddress: '127.0.0.1' })).status, 200, 'allowed client through nginx')
  t.equal((await fetchText(`${via}/metrics`, { localAddress: '127.0.0.1' })).status, 200)
  t.equal((await fetchText(`${via}/app`, { localAddress: '127.0.0.2' })).body, 'app', 'other paths reach the backend')

  // Not a trusted peer: its header is never read, in either direction.
  t.equal((await fetchText(`${rig.url}/server-status`, { localAddress: '127.0.0.2', headers: { 'x-forwarded-for': '127.0.0.1' } })).status, 403,
    'untrusted peer 127.0.0.2 claiming 127.0.0.1')

  // The live view's upgrade, from the trusted peer itself forwarding for 127.0.0.2: refused.
  const live = new WebSocket(`ws://127.0.0.1:${rig.port}/server-status/live`, { headers: { 'x-forwarded-for': '127.0.0.2' } })
  const refused = await new Promise<number>((resolve) => {
    live.once('unexpected-response', (_req, res) => { resolve(res.statusCode ?? 0); live.terminate() })
    live.once('open', () => { resolve(101); live.terminate() })
    live.once('error', () => resolve(-1))
  })
  t.equal(refused, 403, 'live upgrade for a forwarded client outside allow')
  // Without the header it is the trusted peer's own request: allowed.
  const own = new WebSocket(`ws://127.0.0.1:${rig.port}/server-status/live`)
  const opened = await new Promise<boolean>((resolve) => { own.once('open', () => resolve(true)); own.once('error', () => resolve(false)); own.once('unexpected-response', () => resolve(false)) })
  t.ok(opened, 'live upgrade of the trusted peer itself')
  own.terminate()
  await new Promise((resolve) => own.once('close', resolve))
})

t.test('forwarding headers only take access away: a trusted peer outside allow stays out whoever it forwards for', async (t) => {
  guardLeaks(t)
  const be = await backend(t, (_req, res) => { res.end('app') })
  const rig = await statusRig(t, {
    trustedProxies: ['127.0.0.1'],
    routes: [{ name: 'app', match: { prefix: '/' }, protocol: 'http', backends: [be.address] }],
  }, { allow: ['127.0.0.2'], trustedProxies: ['127.0.0.1'] })
  const cases: Array<Record<string, string>> = [{ 'x-forwarded-for': '127.0.0.2' }, { forwarded: 'for=127.0.0.2' }, {}]
  for (const headers of cases) {
    t.equal((await fetchText(`${rig.url}/server-status?format=json`, { localAddress: '127.0.0.1', headers })).status, 403, `trusted 127.0.0.1 with ${JSON.stringify(headers)}`)
  }
  t.equal((await fetchText(`${rig.url}/server-status?format=json`, { localAddress: '127.0.0.2' })).status, 200, 'the allowed peer itself')
})

t.test('createStatus: a trustedProxies entry that is not an address is ERR_CONFIG at /trustedProxies', async (t) => {
  const proxy = await createProxy({ logger: silentLogger, routes: [] })
  t.teardown(() => proxy.close(1000))
  t.throws(() => createStatus(proxy, { trustedProxies: ['not-an-ip'] }), { code: 'ERR_CONFIG', issues: [{ path: '/trustedProxies' }] })
})
