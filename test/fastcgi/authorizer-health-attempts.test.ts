/**
 * The FastCGI authorizer's passive health counts what the route's own pool counts (pool.ts
 * attemptFailed / answered, test/core/passive-health-attempts.test.ts): an authorizer backend that
 * accepts and then resets, closes before its head, or never answers (its `timeout`) is skipped for
 * disableTime after maxFails (3) such failures with no answer in between; any head it sends starts
 * the count over, and a client that leaves counts nothing. Before, the authorizer counted only
 * failed connects, and such a backend kept its share of the requests (each a 502 or a 504). A reset
 * or close before its head is also sent on to the next authorizer backend (authorizer.ts failover,
 * test/fastcgi/authorizer-failover-next.test.ts), so those clients get their 200 all the same; a
 * timeout is not, and stays a 504.
 * php-cgi plays the sound authorizer, the responder and the silent authorizer (its script sleeps
 * past `timeout` when that php-cgi runs with HANG=1); a raw TCP fake plays the authorizer that
 * resets or closes on the first bytes of a request, which php-cgi cannot do on demand.
 */
import t from 'tap'
import { request } from 'node:http'
import { join } from 'node:path'
import { recordStates } from '../helpers/backend-states.js'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { get, proxyServer, rawBackend } from '../helpers/servers.js'
import { havePeer, PHP_CGI } from './helpers/peers.js'
import { authorizerPhp } from './helpers/authorizer-php.js'
import type { CreateProxyOptions } from '../../src/index.js'

type RouteConfig = CreateProxyOptions['routes'][number]

if (havePeer(t, PHP_CGI)) {
  for (const mode of ['reset', 'close'] as const) {
    t.test(`an authorizer that ${mode === 'reset' ? 'resets' : 'closes'} before its head: disabled after 3, skipped for disableTime${mode === 'reset' ? ', then tried again' : ''}`, async (t) => {
      guardLeaks(t, { timeoutMs: 10_000 })
      const events = recordStates(t)
      const { dir, address: phpAddr } = await authorizerPhp(t, 'pc-authz-health-')
      // FastCGI requests (BEGIN_REQUEST, type 1) it got; a discovery query (GET_VALUES) is not one.
      let requests = 0
      const bad = await rawBackend(t, (s) => {
        s.once('data', (d: Buffer) => {
          if (d[1] === 1) requests++
          if (mode === 'reset') s.resetAndDestroy()
          else s.end()
        })
      })
      const { url, proxy } = await proxyServer(t, {
        routes: [{
          match: { extension: '.php' }, protocol: 'fastcgi', backends: [phpAddr], docroot: dir, disableTime: '4s',
          authorizer: { backends: [bad.address, phpAddr], scriptFilename: join(dir, 'auth.php'), timeout: '10s' },
        } as RouteConfig],
      })
      const pool = proxy.routes[0].authorizer!.pool
      const b = pool.backends.find((x) => x.endpoint.id === bad.address)!
      const statuses: string[] = []
      for (let i = 0; i < 12 && requests < 3; i++) {
        const r = await get(`${url}/app.php?w=${i}`)
        statuses.push(`${r.status} ${r.body.toString()}`)
      }
      t.equal(requests, 3, `the bad authorizer got three requests (${statuses.join(',')})`)
      t.ok(statuses.every((s) => s === '200 app by=sound'), 'each allowed by php-cgi, those three after a failover')
      t.equal(b.state, 'disabled', 'disabled after its third failure')
      t.equal(b.failures, 0, 'no connect failed')
      const code = mode === 'reset' ? 'ERR_BACKEND_RESET' : 'ERR_BACKEND_CLOSED'
      t.equal(b.lastError, code)
      const ev = events.filter((e) => e.kind === 'backend:disabled' && e.backend === bad.address)
      t.equal(ev.length, 1, 'one backend:disabled event')
      t.equal(ev[0]?.pool, '0:authorizer', 'for the authorizer pool')
      t.equal(ev[0]?.reason, `${code} (3 failed attempts within 4000 ms)`, 'the reason names the failure')

      for (let i = 0; i < 8; i++) {
        const r = await get(`${url}/app.php?d=${i}`)
        t.same([r.status, r.body.toString()], [200, 'app by=sound'], 'allowed by php-cgi')
      }
      t.ok(Date.now() < b.disabledUntil, 'still within disableTime (else the machine is too slow for this test)')
      t.equal(requests, 3, 'no request reached the disabled authorizer')
      t.notOk(events.some((e) => e.kind === 'pool:down'), 'the authorizer pool never went down')
      if (mode === 'close') return

      t.ok(await waitFor(() => Date.now() >= b.disabledUntil, 20_000), 'disableTime over')
      for (let i = 0; i < 4 && requests === 3; i++) await get(`${url}/app.php?again=${i}`)
      t.equal(requests, 4, 'tried again once disableTime is over')
      t.ok(events.some((e) => e.kind === 'backend:enabled' && e.backend === bad.address), 'backend:enabled')
    })
  }

  t.test('an authorizer that never answers: disabled after 3 timeouts in a row; an answer in between starts the count over', async (t) => {
    guardLeaks(t, { timeoutMs: 10_000 })
    const events = recordStates(t)
    const { dir, address: phpAddr, flaky, hung } = await authorizerPhp(t, 'pc-authz-health-')
    // Every hung request holds one of its workers (sleep 15 s): 7 of them hang here.
    const flakyAddr = await flaky(10)
    const { url, proxy } = await proxyServer(t, {
      routes: [{
        match: { extension: '.php' }, protocol: 'fastcgi', backends: [phpAddr], docroot: dir, disableTime: '60s',
        authorizer: { backends: [flakyAddr, phpAddr], scriptFilename: join(dir, 'auth.php'), timeout: '1s' },
      } as RouteConfig],
    })
    const pool = proxy.routes[0].authorizer!.pool
    const f = pool.backends.find((x) => x.endpoint.id === flakyAddr)!
    // The two authorizers take turns (least-connection, ties in turn): of four `hang` requests
    // the flaky one gets two, of two plain ones one, which it answers — twice over.
    const seq: string[] = []
    for (let round = 0; round < 2; round++) {
      for (let i = 0; i < 4; i++) seq.push(`${(await get(`${url}/app.php?hang=${round}${i}`)).status}`)
      for (let i = 0; i < 2; i++) {
        const r = await get(`${url}/app.php?ok=${round}${i}`)
        seq.push(`${r.status} ${r.body.toString()}`)
      }
    }
    t.equal(hung(), 4, `the flaky authorizer timed out four times (${seq.join(' | ')})`)
    t.equal(seq.filter((s) => s === '504').length, 4, 'each a 504')
    t.ok(seq.includes('200 app by=flaky'), 'and answered in between')
    t.equal(f.state, 'up', 'never three failures in a row: still up')
    t.equal(f.attemptFails, 0, 'its last answer started the count over')
    t.notOk(events.some((e) => e.kind === 'backend:disabled'), 'no backend:disabled')

    const statuses: number[] = []
    for (let i = 0; i < 12 && f.state === 'up'; i++) statuses.push((await get(`${url}/app.php?hang=x${i}`)).status)
    t.equal(hung(), 7, `three more timeouts in a row (${statuses.join(',')})`)
    t.equal(f.state, 'disabled', 'disable it')
    t.equal(f.lastError, 'ERR_HEADERS_TIMEOUT')
    t.equal(events.find((e) => e.kind === 'backend:disabled' && e.backend === flakyAddr)?.reason, 'ERR_HEADERS_TIMEOUT (3 failed attempts within 60000 ms)')
    for (let i = 0; i < 6; i++) {
      const r = await get(`${url}/app.php?hang=d${i}`)
      t.same([r.status, r.body.toString()], [200, 'app by=sound'], 'allowed by the sound authorizer')
    }
    t.equal(hung(), 7, 'nothing more reached the flaky one')
  })

  t.test('a client that leaves while the authorizer thinks counts nothing', async (t) => {
    guardLeaks(t, { timeoutMs: 10_000 })
    const events = recordStates(t)
    const { dir, address: phpAddr, flaky, hung } = await authorizerPhp(t, 'pc-authz-health-')
    const flakyAddr = await flaky(8)
    const { port, proxy } = await proxyServer(t, {
      routes: [{
        match: { extension: '.php' }, protocol: 'fastcgi', backends: [phpAddr], docroot: dir, disableTime: '60s',
        authorizer: { backends: [flakyAddr, phpAddr], scriptFilename: join(dir, 'auth.php'), timeout: '30s' },
      } as RouteConfig],
    })
    const pool = proxy.routes[0].authorizer!.pool
    const f = pool.backends.find((x) => x.endpoint.id === flakyAddr)!
    let aborted = 0
    for (let i = 0; i < 12 && aborted < 4; i++) {
      const before = hung()
      const req = request({ port, path: `/app.php?hang=${i}` })
      req.on('error', () => {})
      const answered = new Promise<boolean>((resolve) => { req.on('response', (r) => { r.resume(); r.on('end', () => resolve(true)) }) })
      req.end()
      const where = await Promise.race([answered, waitFor(() => hung() > before, 10_000).then(() => false)])
      if (!where) { req.destroy(); aborted++ }
    }
    t.equal(aborted, 4, 'four clients went away while the flaky authorizer held them')
    t.ok(await waitFor(() => f.inflight === 0, 10_000), 'the aborted authorizations are over')
    t.equal(f.state, 'up')
    t.equal(f.attemptFails, 0, 'nothing counted')
    t.notOk(events.some((e) => e.kind === 'backend:disabled'), 'no backend:disabled')
  })
}
