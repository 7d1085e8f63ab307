/**
 * php-fpm with a tiny `listen.backlog` and every worker busy: a connect to its unix socket fails
 * with EAGAIN (nginx: 502 "connect() ... failed (11: Resource temporarily unavailable)"). When
 * connections of ours are open to the pool, one of them will free a worker: the request waits in
 * the client's queue instead of failing (a connect failure would also make the core disable the
 * backend for disableTime). With none of ours open, nothing would wake it: ERR_CONNECT_FAILED at
 * once, never a hang.
 */
import t from 'tap'
import { existsSync, writeFileSync } from 'node:fs'
import { connect, type Socket } from 'node:net'
import { join } from 'node:path'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { ProxyError } from '../../src/core/errors.js'
import { FastcgiClient } from '../../src/protocols/fastcgi/client.js'
import { FASTCGI_DEFAULTS } from '../../src/protocols/fastcgi/options.js'
import { makeExchange, record, testContext, unixEndpoint } from './helpers/harness.js'
import { PHP_FIXTURE, PHP_FPM, havePeer, startPhpFpm, tempDir } from './helpers/peers.js'

/** Leak guard, a php-fpm pool of one worker with listen.backlog = 1, and its test script. */
async function oneWorker (t: Parameters<typeof startPhpFpm>[0]) {
  guardLeaks(t)
  const dir = tempDir(t)
  const script = join(dir, 't.php')
  writeFileSync(script, PHP_FIXTURE)
  return { dir, script, fpm: await startPhpFpm(t, dir, 1, 'listen.backlog = 1') }
}

t.test('php-fpm, 1 worker, listen.backlog = 1', async (t) => {
  if (!havePeer(t, PHP_FPM)) return

  t.test('a full listen queue delays requests while ours are open to the pool; none fails', async (t) => {
    const { script, fpm } = await oneWorker(t)
    const ctx = testContext()
    const client = new FastcgiClient(unixEndpoint(fpm.socketPath), { ...FASTCGI_DEFAULTS }, ctx)
    t.teardown(() => client.destroy())
    const ask = (method: string, query: string) => {
      const r = record()
      client.dispatch(makeExchange({ method, query, env: { SCRIPT_FILENAME: script } }), r.handler)
      return r.done
    }
    t.equal((await ask('GET', '')).status, 200, 'warm: discovery done')
    const busy = ask('GET', 'sleep=300')
    const rest = await Promise.all(Array.from({ length: 8 }, (_, i) => ask(i % 4 === 3 ? 'POST' : 'GET', '')))
    t.same(rest.map((r) => r.error?.code ?? r.status), Array(8).fill(200), 'every request behind the busy worker is answered')
    t.equal((await busy).status, 200)
    const warned = ctx.logs.filter((l) => l.level === 'warn' && /listen queue is full/.test(l.msg ?? ''))
    t.ok(warned.length <= 1, 'at most one warning')
  })

  t.test('requests waiting on a full listen queue leave with the core timeout, then the pool serves again', async (t) => {
    const { script, fpm } = await oneWorker(t)
    const client = new FastcgiClient(unixEndpoint(fpm.socketPath), { ...FASTCGI_DEFAULTS }, testContext())
    t.teardown(() => client.destroy())
    const ask = (query: string, timeoutMs = 0) => {
      const r = record()
      const ac = new AbortController()
      // The core aborts the signal with its own error when timeouts.headers passes.
      if (timeoutMs > 0) setTimeout(() => ac.abort(new ProxyError('ERR_HEADERS_TIMEOUT', `${timeoutMs} ms`, { phase: 'head' })), timeoutMs)
      client.dispatch(makeExchange({ query, signal: ac.signal, env: { SCRIPT_FILENAME: script } }), r.handler)
      return r.done
    }
    t.equal((await ask('')).status, 200, 'warm: discovery done')
    const busy = ask('sleep=3000')
    const started = Date.now()
    const waiting = await Promise.all(Array.from({ length: 6 }, () => ask('', 200)))
    t.same(waiting.map((r) => r.error?.code), Array(6).fill('ERR_HEADERS_TIMEOUT'), 'each leaves with the timeout code')
    t.ok(Date.now() - started < 2500, `none outlived its timeout by much (${Date.now() - started} ms)`)
    t.equal(client.inflight, 1, 'only the busy request is left')
    t.equal((await busy).status, 200)
    t.equal((await ask('')).status, 200, 'served again')
  })

  t.test('a listen queue filled by others, none of ours open: ERR_CONNECT_FAILED at once, never a wait', async (t) => {
    const { dir, script, fpm } = await oneWorker(t)
    // Another client: a request holds the worker (its script has started), raw connections fill
    // the queue until the kernel refuses one.
    writeFileSync(join(dir, 'hold.php'), `<?php touch(__DIR__ . '/holding'); sleep(3); echo 'held';`)
    const holder = new FastcgiClient(unixEndpoint(fpm.socketPath), { ...FASTCGI_DEFAULTS, discovery: false }, testContext())
    const held = record()
    holder.dispatch(makeExchange({ env: { SCRIPT_FILENAME: join(dir, 'hold.php') } }), held.handler)
    t.teardown(() => holder.destroy())
    t.ok(await waitFor(() => existsSync(join(dir, 'holding')), 5000), 'the worker is busy')
    const others: Socket[] = []
    t.teardown(() => { for (const s of others) s.destroy() })
    let refused: string | null = null
    for (let i = 0; i < 16 && refused === null; i++) {
      refused = await new Promise<string | null>((resolve) => {
        const s = connect(fpm.socketPath)
        others.push(s)
        s.once('connect', () => resolve(null))
        s.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? 'error'))
      })
    }
    t.equal(refused, 'EAGAIN', 'the listen queue is full')
    for (const discovery of [true, false]) {
      // Without discovery the requests open their own connections at once, and each is refused.
      const client = new FastcgiClient(unixEndpoint(fpm.socketPath), { ...FASTCGI_DEFAULTS, discovery }, testContext())
      t.teardown(() => client.destroy())
      const outcomes = await Promise.all(Array.from({ length: 3 }, () => {
        const r = record()
        client.dispatch(makeExchange({ env: { SCRIPT_FILENAME: script } }), r.handler)
        let timer: NodeJS.Timeout | undefined
        const late = new Promise<string>((resolve) => { timer = setTimeout(() => resolve('no answer within 5 s'), 5000) })
        return Promise.race([r.done.then((got) => `${got.error?.code} ${got.error?.phase}`), late]).finally(() => clearTimeout(timer))
      }))
      t.same(outcomes, Array(3).fill('ERR_CONNECT_FAILED connect'), `discovery ${discovery}: each fails at once`)
      t.equal(client.inflight, 0)
    }
  })
})
