/**
 * Audit (H7): balancing and passive health through a real proxy, with node:http backends and, for
 * the one fault they cannot produce, a blackhole: a real listening socket (perl) that never
 * accepts, its accept queue filled, so a connect to it hangs in SYN retries (no external address).
 *
 * - round-robin shares exactly evenly, hash keeps a URL on its backend and moves only the URLs of
 *   a backend that is down;
 * - a backend that stops (connection refused) is skipped, and serves again once it listens again
 *   and its disableTime is over;
 * - a blackholed backend: each request waits at most timeouts.connect once, then fails over (a POST
 *   too: nothing of it was sent) with its whole body, once; the backend is then skipped, so later
 *   requests do not wait;
 * - every backend blackholed: 504 ERR_CONNECT_TIMEOUT (the last real failure), then
 *   503 ERR_NO_BACKEND with Retry-After within disableTime, without waiting for any connect.
 */
import t, { type Test } from 'tap'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { connect, type Socket } from 'node:net'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { settled } from '../helpers/counters.js'
import { freePort } from '../helpers/ports.js'
import { backend, closeServer, get, proxyServer, type Got } from '../helpers/servers.js'

guardLeaks(t, { timeoutMs: 10_000 })

/** A node:http backend that answers its name and records the URLs and bodies it got. */
async function named (t: Test, name: string, port = 0) {
  const seen: string[] = []
  const bodies: number[] = []
  const be = await backend(t, (req, res) => {
    seen.push(req.url ?? '')
    let n = 0
    req.on('data', (c: Buffer) => { n += c.length })
    req.on('end', () => { bodies.push(n); res.end(name) })
  }, port)
  return { ...be, seen, bodies, name }
}

/** `host:port` of a listening socket that never accepts and whose accept queue is full. */
async function blackhole (t: Test): Promise<string> {
  const holder = spawn('perl', ['-MIO::Socket::INET', '-e',
    '$| = 1; my $s = IO::Socket::INET->new(LocalAddr => "127.0.0.1", LocalPort => 0, Listen => 0, Proto => "tcp") or die $!; print $s->sockport, "\\n"; <STDIN>'],
  { stdio: ['pipe', 'pipe', 'inherit'] })
  t.teardown(async () => {
    if (holder.exitCode === null && holder.signalCode === null) {
      const exited = once(holder, 'exit')
      holder.kill('SIGKILL')
      await exited
    }
  })
  const [line] = await once(holder.stdout!, 'data') as [Buffer]
  const port = Number(line.toString().trim())
  const fillers: Socket[] = []
  t.teardown(() => { for (const s of fillers) s.destroy() })
  // Connects complete (into the accept queue) until it is full; then one hangs.
  let hung = false
  for (let i = 0; i < 16 && !hung; i++) {
    hung = await new Promise<boolean>((resolve) => {
      const s = connect({ host: '127.0.0.1', port })
      fillers.push(s)
      s.on('error', () => {})
      const timer = setTimeout(() => { resolve(true) }, 1000)
      s.once('connect', () => { clearTimeout(timer); resolve(false) })
    })
  }
  t.ok(hung, `blackhole on ${port}: a connect hangs`)
  return `127.0.0.1:${port}`
}

const code = (r: Got): string => /ERR_[A-Z_]+/.exec(r.body.toString())?.[0] ?? ''

t.test('round-robin: three backends get exactly a third each of sequential requests', async (t) => {
  const bs = [await named(t, 'a'), await named(t, 'b'), await named(t, 'c')]
  const { url, proxy } = await proxyServer(t, { routes: [{ protocol: 'http', backends: bs.map((b) => b.address), balance: 'round-robin' }] })
  for (let i = 0; i < 30; i++) t.equal((await get(`${url}/${i}`)).status, 200)
  t.same(bs.map((b) => b.seen.length), [10, 10, 10])
  t.ok(await settled(proxy))
})

t.test('hash: a URL stays on its backend; only the URLs of a stopped backend move', async (t) => {
  const ports = [await freePort(), await freePort(), await freePort()]
  const bs = [await named(t, 'a', ports[0]), await named(t, 'b', ports[1]), await named(t, 'c', ports[2])]
  const { url, proxy } = await proxyServer(t, { routes: [{ protocol: 'http', backends: bs.map((b) => b.address), balance: 'hash', disableTime: '60s' }] })
  const urls = Array.from({ length: 30 }, (_, i) => `/k${i}`)
  const where = async (): Promise<string[]> => {
    const out: string[] = []
    for (const u of urls) { const r = await get(`${url}${u}`); t.equal(r.status, 200, u); out.push(r.body.toString()) }
    return out
  }
  const before = await where()
  t.same(await where(), before, 'the same URL goes to the same backend')
  t.ok(before.includes('b'), 'b has keys')
  await closeServer(bs[1].server)
  const after = await where()
  for (let i = 0; i < urls.length; i++) {
    if (before[i] === 'b') t.not(after[i], 'b', `${urls[i]} moved off the stopped backend`)
    else t.equal(after[i], before[i], `${urls[i]} stayed on ${before[i]}`)
  }
  t.ok(await settled(proxy))
})

t.test('a backend that stops is skipped; once it listens again and disableTime is over it serves again', async (t) => {
  const port = await freePort()
  const a = await named(t, 'a')
  let b = await named(t, 'b', port)
  const { url, proxy } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [a.address, b.address], balance: 'round-robin', disableTime: '1s' }] })
  const pool = proxy.routes[0].pool
  for (let i = 0; i < 4; i++) t.equal((await get(`${url}/warm${i}`)).status, 200)
  t.same([a.seen.length, b.seen.length], [2, 2])
  await closeServer(b.server)
  for (let i = 0; i < 6; i++) {
    const r = await get(`${url}/down${i}`)
    t.equal(r.status, 200, 'served by the live backend')
    t.equal(r.body.toString(), 'a')
  }
  const bState = pool.backends.find((x) => x.endpoint.id === b.address)!
  t.equal(bState.state, 'disabled', 'the stopped backend is disabled')
  t.equal(bState.failures, 1, 'tried once, then skipped')
  b = await named(t, 'b', port)
  t.ok(await waitFor(() => Date.now() >= bState.disabledUntil, 10_000), 'disableTime over')
  const back: string[] = []
  for (let i = 0; i < 4; i++) back.push((await get(`${url}/back${i}`)).body.toString())
  t.ok(back.includes('b'), `the restarted backend serves again (${back.join(',')})`)
  t.equal(bState.state, 'up')
  t.ok(await settled(proxy))
})

t.test('a blackholed backend: connect timeout, failover (a POST with its whole body, once), then skipped', async (t) => {
  const hole = await blackhole(t)
  const good = await named(t, 'good')
  const { url, proxy } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [hole, good.address], balance: 'round-robin', timeouts: { connect: '300ms' }, disableTime: '60s' }] })
  const body = Buffer.alloc(200_000, 0x61)
  const started = Date.now()
  const first = await get(`${url}/p0`, { method: 'POST', body })
  t.equal(first.status, 200, 'the POST failed over: nothing of it reached the blackhole')
  t.equal(first.body.toString(), 'good')
  t.same(good.bodies, [body.length], 'with its whole body, sent once')
  const holeB = proxy.routes[0].pool.backends.find((x) => x.endpoint.id === hole)!
  t.equal(holeB.state, 'disabled')
  t.equal(holeB.lastError, 'ERR_CONNECT_TIMEOUT')
  const firstTook = Date.now() - started
  t.ok(firstTook >= 250, `the first waited for the connect timeout (${firstTook} ms)`)
  for (let i = 1; i <= 5; i++) t.equal((await get(`${url}/p${i}`, { method: 'POST', body })).status, 200)
  t.equal(holeB.failures, 1, 'the disabled blackhole was not tried again')
  t.same(good.bodies, Array(6).fill(body.length))
  t.ok(await settled(proxy))
})

t.test('every backend blackholed: 504 ERR_CONNECT_TIMEOUT, then 503 ERR_NO_BACKEND + Retry-After at once', async (t) => {
  const h1 = await blackhole(t)
  const h2 = await blackhole(t)
  const { url, proxy } = await proxyServer(t, { routes: [{ protocol: 'http', backends: [h1, h2], timeouts: { connect: '300ms' }, disableTime: '20s' }] })
  const first = await get(`${url}/a`)
  t.equal(first.status, 504)
  t.equal(code(first), 'ERR_CONNECT_TIMEOUT')
  const pool = proxy.routes[0].pool
  t.same(pool.backends.map((b) => b.state), ['disabled', 'disabled'], 'both tried and disabled')
  const second = await get(`${url}/b`)
  t.equal(second.status, 503)
  t.equal(code(second), 'ERR_NO_BACKEND')
  const ra = Number(second.headers['retry-after'])
  t.ok(ra >= 1 && ra <= 20, `Retry-After ${ra} within disableTime`)
  t.same(pool.backends.map((b) => b.failures), [1, 1], 'no connect was tried for the second request')
  t.ok(await settled(proxy))
})
