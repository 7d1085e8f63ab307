/**
 * `proxycore status` against servers a real proxycore never is: JSON whose routes or spawns lack the
 * fields the table prints (a route without `latency` was `Cannot read properties of undefined
 * (reading 'p99Ms')`, a field of the wrong type printed `undefined` cells with exit 0), a JSON array,
 * a 500, a refused connection, and a body without end (read whole into memory: 2 GB RSS within 5 s,
 * then a misleading "no answer" timeout). Each is one line naming the URL and the cause, exit 1.
 * Raw node:http fakes: no real proxycore answers like this.
 */
import t, { type Test as Tap } from 'tap'
import type { ServerResponse } from 'node:http'
import { guardLeaks } from '../helpers/leaks.js'
import { deadPort } from '../helpers/ports.js'
import { backend } from '../helpers/servers.js'
import { runCli } from './run.js'

/** A node:http fake answering every request with `handler`; its address. */
async function fake (t: Tap, handler: (res: ServerResponse) => void): Promise<string> {
  return (await backend(t, (_req, res) => handler(res))).address
}

const json = (body: unknown) => (res: ServerResponse): void => {
  res.setHeader('content-type', 'application/json')
  res.end(JSON.stringify(body))
}

const route = { name: 'web', protocol: 'http', spawn: null, requests: 1, errors: 0, dropped: 0, active: 0, available: 1, capacity: 1, latency: { p50Ms: 1, p99Ms: 2, meanMs: 1 } }
const proc = { pid: 10, state: 'ready', address: '127.0.0.1:9000', requests: 3, inflight: 0, uptimeSeconds: 5 }
const spawn = { name: 'app', state: 'RUNNING', reason: null, pipeChildren: 0, processes: [proc] }
const page = (over: Record<string, unknown>): Record<string, unknown> => ({ software: 'proxycore/0.1.0', uptimeSeconds: 1, inflight: 0, routes: [route], spawns: [spawn], ...over })

const noCrash = /TypeError|Cannot read properties|undefined|\[object Object\]|\n\s+at /

t.test('status: the full shape renders (the check below refuses only what the table cannot print)', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  const r = await runCli(['status', await fake(t, json(page({})))])
  t.equal(r.code, 0, r.stderr)
  t.match(r.stdout, /^web\s+http\s+1\/1\s+1\s+0\s+0\s+0\s+2ms$/m)
  t.match(r.stdout, /^app\s+RUNNING\s+10\s+ready\s+127\.0\.0\.1:9000\s+3\s+0\s+5s$/m)
})

const shapes: Array<[string, Record<string, unknown>, string]> = [
  ['a route without latency', page({ routes: [{ ...route, latency: undefined }] }), '/routes/0/latency: expected an object'],
  ['a route with latency null', page({ routes: [{ ...route, latency: null }] }), '/routes/0/latency: expected an object'],
  ['a route that is null', page({ routes: [route, null] }), '/routes/1: expected an object'],
  ['a route name that is a number', page({ routes: [{ ...route, name: 5 }] }), '/routes/0/name: expected a string'],
  ['a route without counters', page({ routes: [{ name: 'web', protocol: 'http', spawn: null, latency: { p99Ms: null } }] }), '/routes/0/available: expected a number'],
  ['a spawn without processes', page({ spawns: [{ name: 'app', state: 'RUNNING', reason: null, pipeChildren: 0 }] }), '/spawns/0/processes: expected an array'],
  ['a process that is null', page({ spawns: [{ ...spawn, processes: [null] }] }), '/spawns/0/processes/0: expected an object'],
  ['a process pid that is a string', page({ spawns: [{ ...spawn, processes: [{ ...proc, pid: '10' }] }] }), '/spawns/0/processes/0/pid: expected a number or null'],
  ['no uptime', page({ uptimeSeconds: undefined }), '/uptimeSeconds: expected a number'],
]

for (const [what, body, problem] of shapes) {
  t.test(`status: ${what} is one line naming the field, exit 1`, async (t) => {
    guardLeaks(t, { timeoutMs: 15_000 })
    const at = await fake(t, json(body))
    const r = await runCli(['status', at])
    t.equal(r.code, 1)
    t.equal(r.stdout, '')
    t.equal(r.stderr, `proxycore status: http://${at}/server-status?format=json is not a proxycore status page: ${problem}\n`)
    t.notMatch(r.stderr.replace(problem, ''), noCrash)
  })
}

t.test('status: a JSON array, a 500 and a refused connection are one line each, exit 1', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  const array = await fake(t, json([page({})]))
  const a = await runCli(['status', array])
  t.same([a.code, a.stderr], [1, `proxycore status: http://${array}/server-status?format=json is not a proxycore status page: the JSON has no software, routes and spawns\n`])
  const failing = await fake(t, (res) => { res.statusCode = 500; res.end('{"software":"x","routes":[],"spawns":[]}') })
  const f = await runCli(['status', failing])
  t.same([f.code, f.stderr], [1, `proxycore status: http://${failing}/server-status?format=json is not a proxycore status page: HTTP 500\n`])
  const dead = await deadPort()
  const d = await runCli(['status', `127.0.0.1:${dead}`])
  t.same([d.code, d.stderr], [1, `proxycore status: cannot reach http://127.0.0.1:${dead}/server-status: ECONNREFUSED (is proxycore serving there, with \`status\` in its config?)\n`])
})

t.test('status: a body without end is refused at the size limit, long before --timeout, exit 1', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  const chunk = Buffer.alloc(64 * 1024, 0x20)
  let sent = 0
  const at = await fake(t, (res) => {
    res.setHeader('content-type', 'application/json')
    // Spaces are valid JSON padding: only the size gives it away. Written as fast as it is read,
    // until the client hangs up (bounded: 1 GiB at most).
    const more = (): void => {
      while (sent < 1024 ** 3 && !res.destroyed) {
        sent += chunk.length
        if (!res.write(chunk)) { res.once('drain', more); return }
      }
      res.end()
    }
    res.on('close', () => res.removeAllListeners('drain'))
    more()
  })
  const started = Date.now()
  const r = await runCli(['status', at, '--timeout=60s'])
  t.equal(r.code, 1)
  t.equal(r.stderr, `proxycore status: http://${at}/server-status?format=json is not a proxycore status page: the answer is larger than 16 MiB\n`)
  t.ok(Date.now() - started < 50_000, `gave up at the limit, not at the timeout (${Date.now() - started} ms)`)
  t.ok(sent < 256 * 1024 * 1024, `stopped reading soon after the limit (${sent} bytes sent)`)
})

t.test('status: a Content-Length above the limit is refused before the body is read', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  const at = await fake(t, (res) => {
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': String(1024 ** 4) })
    res.write('{')
  })
  const r = await runCli(['status', at, '--timeout=30s'])
  t.equal(r.code, 1)
  t.equal(r.stderr, `proxycore status: http://${at}/server-status?format=json is not a proxycore status page: the answer is larger than 16 MiB (Content-Length ${1024 ** 4})\n`)
})
