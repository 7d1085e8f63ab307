/**
 * A failed authorization goes to the next authorizer backend (authorizer.ts onError, as the route's
 * own exchanges fail over: exchange.ts onError, nginx auth_request + proxy_next_upstream): after a
 * refused connect, or a reset or close before any byte of its answer. Each backend at most once per
 * request; never after the authorizer's `timeout` (one deadline for the whole authorization, not
 * one per attempt). Before, the first of these cost the client a 502.
 * php-cgi is the sound authorizer and the responder, and (run with HANG=1) the one that stays
 * silent; a dead port the one that refuses; raw TCP fakes the ones that reset or close on the
 * request, which php-cgi cannot do on demand. The fakes count the requests they got by their id.
 */
import t, { type Test } from 'tap'
import type { Socket } from 'node:net'
import { join } from 'node:path'
import { guardLeaks } from '../helpers/leaks.js'
import { deadPort } from '../helpers/ports.js'
import { get, proxyServer, rawBackend } from '../helpers/servers.js'
import { havePeer, PHP_CGI } from './helpers/peers.js'
import { authorizerPhp } from './helpers/authorizer-php.js'
import type { CreateProxyOptions } from '../../src/index.js'

type RouteConfig = CreateProxyOptions['routes'][number]

/**
 * A raw FastCGI backend that reads a request's BEGIN_REQUEST and PARAMS, notes its `id=N` query,
 * then resets or closes the connection without a byte of answer. A GET_VALUES (discovery) gets
 * a close and counts nothing.
 */
async function badAuthorizer (t: Test, mode: 'reset' | 'close'): Promise<{ address: string, seen: string[] }> {
  const seen: string[] = []
  const bad = await rawBackend(t, (s: Socket) => {
    let buf = Buffer.alloc(0)
    const onData = (d: Buffer): void => {
      buf = Buffer.concat([buf, d])
      for (let at = 0; at + 8 <= buf.length;) {
        const type = buf[at + 1]
        const len = buf.readUInt16BE(at + 4) + buf[at + 6]
        if (at + 8 + len > buf.length) return
        if (type === 9) { s.off('data', onData); s.end(); return }
        // The empty PARAMS record ends the parameters: the request is whole.
        if (type === 4 && buf.readUInt16BE(at + 4) === 0) {
          s.off('data', onData)
          seen.push(/QUERY_STRINGid=(\d+)/.exec(buf.toString('latin1'))?.[1] ?? '?')
          if (mode === 'reset') s.resetAndDestroy()
          else s.end()
          return
        }
        at += 8 + len
      }
    }
    s.on('data', onData)
    s.on('error', () => {})
  })
  return { address: bad.address, seen }
}

/** How often each id occurs in `seen`, the ids seen more than once. */
function twice (seen: string[]): string[] {
  return seen.filter((id, i) => seen.indexOf(id) !== i)
}

if (havePeer(t, PHP_CGI)) {
  for (const mode of ['reset', 'close'] as const) {
    t.test(`an authorizer backend that ${mode === 'reset' ? 'resets' : 'closes'} before its head: the next one authorizes, 200 every time`, async (t) => {
      guardLeaks(t, { timeoutMs: 10_000 })
      const { dir, address: phpAddr } = await authorizerPhp(t, 'pc-authz-fo-')
      const bad = await badAuthorizer(t, mode)
      // maxFails 0: passive health never skips the bad one, so it keeps getting its turn.
      const { url, proxy } = await proxyServer(t, {
        routes: [{
          match: { extension: '.php' }, protocol: 'fastcgi', backends: [phpAddr], docroot: dir, maxFails: 0,
          authorizer: { backends: [bad.address, phpAddr], scriptFilename: join(dir, 'auth.php'), timeout: '10s' },
        } as RouteConfig],
      })
      const b = proxy.routes[0].authorizer!.pool.backends.find((x) => x.endpoint.id === bad.address)!
      const got: string[] = []
      for (let i = 0; i < 8; i++) {
        const r = await get(`${url}/app.php?id=${i}`)
        got.push(`${r.status} ${r.body.toString()}`)
      }
      t.same(got, Array(8).fill('200 app by=sound'), 'every request allowed by php-cgi')
      t.ok(bad.seen.length >= 3, `the bad authorizer had its turns (${bad.seen.join(',')})`)
      t.same(twice(bad.seen), [], 'each request reached it at most once')
      t.equal(b.lastError, mode === 'reset' ? 'ERR_BACKEND_RESET' : 'ERR_BACKEND_CLOSED', 'its failures are counted')
      t.equal(b.failures, 0, 'no connect failed')
    })
  }

  t.test('an authorizer backend that refuses the connection: the next one authorizes, 200 every time', async (t) => {
    guardLeaks(t, { timeoutMs: 10_000 })
    const { dir, address: phpAddr } = await authorizerPhp(t, 'pc-authz-fo-')
    const dead = `127.0.0.1:${await deadPort()}`
    const { url, proxy } = await proxyServer(t, {
      routes: [{
        match: { extension: '.php' }, protocol: 'fastcgi', backends: [phpAddr], docroot: dir, disableTime: '60s',
        authorizer: { backends: [dead, phpAddr], scriptFilename: join(dir, 'auth.php'), timeout: '10s' },
      } as RouteConfig],
    })
    const d = proxy.routes[0].authorizer!.pool.backends.find((x) => x.endpoint.id === dead)!
    const got: string[] = []
    for (let i = 0; i < 4; i++) {
      const r = await get(`${url}/app.php?id=${i}`)
      got.push(`${r.status} ${r.body.toString()}`)
    }
    t.same(got, Array(4).fill('200 app by=sound'), 'every request allowed by php-cgi')
    t.equal(d.failures, 1, 'the dead one was tried once, then skipped for disableTime')
    t.equal(d.state, 'disabled')
  })

  t.test('every authorizer backend fails: each tried once, then the last failure (502)', async (t) => {
    guardLeaks(t, { timeoutMs: 10_000 })
    const { dir, address: phpAddr } = await authorizerPhp(t, 'pc-authz-fo-')
    const resetter = await badAuthorizer(t, 'reset')
    const closer = await badAuthorizer(t, 'close')
    const { url } = await proxyServer(t, {
      routes: [{
        match: { extension: '.php' }, protocol: 'fastcgi', backends: [phpAddr], docroot: dir, maxFails: 0,
        authorizer: { backends: [resetter.address, closer.address], scriptFilename: join(dir, 'auth.php'), timeout: '10s' },
      } as RouteConfig],
    })
    const statuses: number[] = []
    for (let i = 0; i < 4; i++) statuses.push((await get(`${url}/app.php?id=${i}`)).status)
    t.same(statuses, [502, 502, 502, 502], 'the authorizer fails closed')
    t.same([...resetter.seen].sort(), ['0', '1', '2', '3'], 'the resetting one saw each request once')
    t.same([...closer.seen].sort(), ['0', '1', '2', '3'], 'and so did the closing one')
  })

  t.test('a timeout is not sent to the next authorizer backend, and a failover keeps the first deadline', async (t) => {
    guardLeaks(t, { timeoutMs: 10_000 })
    const { dir, address: phpAddr, flaky, hung } = await authorizerPhp(t, 'pc-authz-fo-')
    const flakyAddr = await flaky(6)
    {
      const { url } = await proxyServer(t, {
        routes: [{
          match: { extension: '.php' }, protocol: 'fastcgi', backends: [phpAddr], docroot: dir, maxFails: 0,
          authorizer: { backends: [flakyAddr, phpAddr], scriptFilename: join(dir, 'auth.php'), timeout: '1s' },
        } as RouteConfig],
      })
      // The two take turns: a request the flaky one hangs on ends in a 504, never in php-cgi's 200.
      const seq: string[] = []
      for (let i = 0; i < 8 && hung() < 2; i++) {
        const before = hung()
        const r = await get(`${url}/app.php?hang=${i}`)
        seq.push(`${hung() > before ? 'hung' : 'ok'} ${r.status}`)
      }
      t.equal(hung(), 2, `the flaky authorizer hung twice (${seq.join(', ')})`)
      t.ok(seq.every((s) => s === 'hung 504' || s === 'ok 200'), 'each of those a 504, the rest 200')
    }
    // A resetting backend that takes its time, then the flaky one: the 504 comes `timeout` after the
    // start, not `timeout` after the failover. The reset comes at half the timeout.
    const seen: string[] = []
    const slow = await rawBackend(t, (s: Socket) => {
      s.on('error', () => {})
      s.once('data', (d: Buffer) => {
        if (d[1] !== 1) { s.end(); return }
        seen.push('x')
        const timer = setTimeout(() => s.resetAndDestroy(), 3000)
        s.once('close', () => clearTimeout(timer))
      })
    })
    const { url } = await proxyServer(t, {
      routes: [{
        match: { extension: '.php' }, protocol: 'fastcgi', backends: [phpAddr], docroot: dir, maxFails: 0,
        authorizer: { backends: [slow.address, flakyAddr], scriptFilename: join(dir, 'auth.php'), timeout: '6s' },
      } as RouteConfig],
    })
    const before = hung()
    const start = Date.now()
    const r = await get(`${url}/app.php?hang=slow`)
    const took = Date.now() - start
    if (seen.length === 1) {
      t.equal(r.status, 504, 'the flaky one timed out')
      t.equal(hung(), before + 1, 'after the failover from the slow resetting one')
      t.ok(took < 8500, `at the first deadline (6 s), not 3 s + 6 s (${took} ms)`)
    } else {
      t.fail(`the first pick was not the slow one (${seen.length}, ${r.status})`)
    }
  })
}
