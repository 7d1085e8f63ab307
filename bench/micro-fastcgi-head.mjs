#!/usr/bin/env node
// Micro-benchmark of the FastCGI request path's own code, per request: buildCgiEnv on a realistic
// browser request (33 variables), encodeRequestHead on a fresh environment, and the CGI response
// head parser on php-fpm's usual head. ns/op and bytes allocated on the V8 heap per op.
//
//   npm run build && node --expose-gc bench/micro-fastcgi-head.mjs [--rounds 30]
//       [--old-codec /path/to/codec.js] [--old-head /path/to/response-head.js] [--old-env /path/to/env.js]
//
// --old-* load a second build of a module (e.g. the previous commit's, compiled elsewhere): each
// round then runs old and new back to back, so both see the same machine load. The spread is
// reported as p10/p90 over rounds: the numbers are only comparable within one run.
import { parseArgs } from 'node:util'
import { pathToFileURL } from 'node:url'
import { buildCgiEnv } from '../dist/core/cgi/env.js'
import { encodeRequestHead, Role } from '../dist/protocols/fastcgi/codec.js'
import { CgiResponseParser } from '../dist/core/cgi/response-head.js'

const { values: args } = parseArgs({
  options: {
    rounds: { type: 'string', default: '30' },
    'old-codec': { type: 'string' },
    'old-head': { type: 'string' },
    'old-env': { type: 'string' },
  },
})
if (typeof globalThis.gc !== 'function') {
  console.error('run with node --expose-gc')
  process.exit(2)
}
const load = async (p) => p === undefined ? null : import(pathToFileURL(p).href)

const rawHeaders = [
  'Host', 'localhost:18081',
  'User-Agent', 'Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0',
  'Accept', 'text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8',
  'Accept-Language', 'en-US,en;q=0.5',
  'Accept-Encoding', 'gzip, deflate, br, zstd',
  'Referer', 'http://localhost:18081/index.php?page=2',
  'Connection', 'keep-alive',
  'Cookie', 'PHPSESSID=3c5b0f1a9d2e4c7b8a6f0e1d2c3b4a59; theme=dark; lang=en',
  'Upgrade-Insecure-Requests', '1',
  'Sec-Fetch-Dest', 'document',
  'Sec-Fetch-Mode', 'navigate',
  'Sec-Fetch-Site', 'same-origin',
  'Sec-Fetch-User', '?1',
  'Priority', 'u=0, i',
  'X-Forwarded-For', '10.1.2.3',
  'X-Request-Id', '6f1c2d3e-4b5a-6978-8a9b-0c1d2e3f4a5b',
]
const input = {
  method: 'GET', url: '/index.php?page=3&sort=desc', path: '/index.php', query: 'page=3&sort=desc', httpVersion: '1.1',
  headers: {}, rawHeaders,
  client: { address: '::ffff:127.0.0.1', port: 51234, localAddress: '::ffff:127.0.0.1', localPort: 18081, secure: false },
  script: { name: '/index.php', filename: '/var/www/html/index.php', pathInfo: '', docroot: '/var/www/html' },
  serverSoftware: 'proxycore/0.1.0', contentLength: null,
  params: { PHP_VALUE: 'display_errors=0', APP_ENV: 'production' },
}
// php-fpm's head for a plain PHP page (the body follows in the same STDOUT record).
const phpHead = Buffer.from('X-Powered-By: PHP/8.2.7\r\nSet-Cookie: PHPSESSID=3c5b0f1a9d2e4c7b8a6f0e1d2c3b4a59; path=/\r\n' +
  'Expires: Thu, 19 Nov 1981 08:52:00 GMT\r\nCache-Control: no-store, no-cache, must-revalidate\r\nPragma: no-cache\r\n' +
  'Content-type: text/html; charset=UTF-8\r\n\r\n<!doctype html><p>hello</p>\n', 'latin1')

const cases = []
const N = 2000
const envs = new Array(N)
const fillEnvs = () => { for (let i = 0; i < N; i++) envs[i] = buildCgiEnv(input) }
function addCodec (label, mod) {
  cases.push({ label, prepare: fillEnvs, op: (i) => mod.encodeRequestHead(1, Role.RESPONDER, true, envs[i], true).length })
}
function addHead (label, mod) {
  cases.push({ label, prepare: null, op: () => { const r = new mod.CgiResponseParser({ maxHeadSize: 8192 }).push(phpHead); return r.done ? r.head.headers.length : -1 } })
}
function addEnv (label, mod) {
  cases.push({ label, prepare: null, op: () => Object.keys(mod.buildCgiEnv(input)).length })
}
const oldCodec = await load(args['old-codec'])
const oldHead = await load(args['old-head'])
const oldEnv = await load(args['old-env'])
if (oldCodec !== null) {
  const a = oldCodec.encodeRequestHead(1, Role.RESPONDER, true, buildCgiEnv(input), true)
  const b = encodeRequestHead(1, Role.RESPONDER, true, buildCgiEnv(input), true)
  if (!a.equals(b)) throw new Error('old and new encodeRequestHead differ')
  addCodec('encodeRequestHead old', oldCodec)
}
addCodec('encodeRequestHead', { encodeRequestHead })
if (oldHead !== null) addHead('response head old', oldHead)
addHead('response head', { CgiResponseParser })
if (oldEnv !== null) addEnv('buildCgiEnv old', oldEnv)
addEnv('buildCgiEnv', { buildCgiEnv })

let sink = 0
const rounds = Number(args.rounds)
const res = cases.map(() => ({ ns: [], bytes: [] }))
for (let round = 0; round < rounds + 3; round++) {
  cases.forEach((c, k) => {
    c.prepare?.()
    globalThis.gc()
    const t0 = process.hrtime.bigint()
    for (let i = 0; i < N; i++) sink += c.op(i)
    const t1 = process.hrtime.bigint()
    // Bytes: few enough ops that no scavenge runs between the two readings.
    c.prepare?.()
    globalThis.gc(); globalThis.gc()
    const h0 = process.memoryUsage().heapUsed
    for (let i = 0; i < 100; i++) sink += c.op(i)
    const h1 = process.memoryUsage().heapUsed
    if (round >= 3) { res[k].ns.push(Number(t1 - t0) / N); res[k].bytes.push((h1 - h0) / 100) }
  })
}
const q = (a, p) => { const s = [...a].sort((x, y) => x - y); return s[Math.floor(p * (s.length - 1))] }
for (const [k, c] of cases.entries()) {
  const { ns, bytes } = res[k]
  console.log(`${c.label.padEnd(24)} ns/op ${q(ns, 0.5).toFixed(0).padStart(6)} (p10 ${q(ns, 0.1).toFixed(0)}, p90 ${q(ns, 0.9).toFixed(0)})` +
    `   heap B/op ${q(bytes, 0.5).toFixed(0).padStart(5)} (p10 ${q(bytes, 0.1).toFixed(0)}, p90 ${q(bytes, 0.9).toFixed(0)})`)
}
// Paired by round: both ran back to back, so a round's load hit both.
for (const [k, c] of cases.entries()) {
  const o = cases.findIndex((d) => d.label === `${c.label} old`)
  if (o < 0) continue
  const wins = res[k].ns.filter((ns, r) => ns < res[o].ns[r]).length
  const ratio = res[k].ns.map((ns, r) => ns / res[o].ns[r])
  console.log(`${c.label}: new/old time per round median ${q(ratio, 0.5).toFixed(2)} (p10 ${q(ratio, 0.1).toFixed(2)}, p90 ${q(ratio, 0.9).toFixed(2)}), new faster in ${wins} of ${ratio.length} rounds`)
}
if (sink === 0) console.log('')
