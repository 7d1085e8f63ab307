/**
 * encodeScgiHead's 7-bit path (a kept scratch Buffer, one checking copy loop) against a spec
 * encoder written from SCGI §3 on random environments: the same bytes, or the same error, for
 * 7-bit text, text over 0x7f, NULs, empty names, CONTENT_LENGTH/SCGI in any case, environments
 * larger than the scratch (grown, then let go), one after the other so a reused scratch shows. And
 * what one head allocates on the V8 heap, measured with V8's sampling heap profiler: a fresh
 * 30-variable environment cost ~7.5 KB per head here (~3.3 KB in the bench's sampling) as one
 * concatenated string (its cons pieces, its flattening, the netstring template); the copy loop
 * allocates the output Buffer and little else (~0.45 KB here). SCGI_ALLOC_SITES=1 prints the sites.
 */
import t from 'tap'
import { Session } from 'node:inspector'
import { encodeScgiHead } from '../../src/protocols/scgi/netstring.js'
import { ProxyError } from '../../src/core/errors.js'

/** SCGI §3 as written: netstring of (name NUL value NUL)*, CONTENT_LENGTH first, SCGI=1, UTF-8. */
function specEncode (env: Record<string, string>, contentLength: number): Buffer | string {
  const parts: Buffer[] = [Buffer.from(`CONTENT_LENGTH\0${contentLength}\0SCGI\x001\0`, 'utf8')]
  for (const name of Object.keys(env)) {
    const value = env[name]
    const upper = name.toUpperCase()
    if (upper === 'CONTENT_LENGTH' || upper === 'SCGI') continue
    if (name === '' || name.includes('\0') || value.includes('\0')) return 'ERR_BAD_HEADER_VALUE'
    parts.push(Buffer.from(`${name}\0${value}\0`, 'utf8'))
  }
  const payload = Buffer.concat(parts)
  return Buffer.concat([Buffer.from(`${payload.length}:`, 'latin1'), payload, Buffer.from(',')])
}

function encodeOrCode (env: Record<string, string>, contentLength: number): Buffer | string {
  try {
    return encodeScgiHead(env, contentLength)
  } catch (err) {
    return err instanceof ProxyError ? err.code : `not a ProxyError: ${String(err)}`
  }
}

/** A small deterministic PRNG (mulberry32): a failure replays from its seed. */
function rng (seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let x = Math.imul(a ^ (a >>> 15), 1 | a)
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296
  }
}

const ALPHABETS = [
  'ABCDEFGHIJKLMNOPQRSTUVWXYZ_', 'abcdefghijklmnopqrstuvwxyz/.-=&?;: %', '\x01\x1f\x7f~!"#$',
  'é€ÿ\u0100😀', '\0', 'ſı', // ſ and ı upper-case to S and I: ſcgi is SCGI to toUpperCase
]
const OWN = ['CONTENT_LENGTH', 'content_length', 'Content_Length', 'SCGI', 'scgi', 'sCgI', 'ſcgi', 'CONTENT_LENGTh']

const CHARS = ALPHABETS.map((a) => [...a])

function randomString (r: () => number, max: number, weirdness: number): string {
  const n = Math.floor(r() * max)
  // A long value is one repeated piece: the scratch's growth is what it is for.
  if (n > 1000) return randomString(r, 100, weirdness).padEnd(n, 'v')
  let s = ''
  for (let i = 0; i < n; i++) {
    const set = r() < weirdness ? CHARS[2 + Math.floor(r() * 4)] : CHARS[Math.floor(r() * 2)]
    s += set[Math.floor(r() * set.length)]
  }
  return s
}

t.test('the same bytes or the same error as the spec encoder on 4000 random environments', async (t) => {
  const r = rng(0x5c61)
  let mismatches = 0
  let errors = 0
  let big = 0
  for (let k = 0; k < 4000; k++) {
    const weird = r() < 0.7 ? 0 : r() * 0.01
    const env: Record<string, string> = {}
    const vars = Math.floor(r() * 40)
    for (let i = 0; i < vars; i++) {
      const name = r() < 0.05 ? OWN[Math.floor(r() * OWN.length)] : r() < 0.01 ? '' : randomString(r, 24, weird) || 'X'
      env[name] = randomString(r, r() < 0.02 ? 40000 : 80, weird)
    }
    const cl = r() < 0.1 ? Math.floor(r() * Number.MAX_SAFE_INTEGER) : Math.floor(r() * 100000)
    const want = specEncode(env, cl)
    const got = encodeOrCode(env, cl)
    if (typeof want === 'string') errors++
    else if (want.length > 65536) big++
    const same = typeof want === 'string' ? got === want : Buffer.isBuffer(got) && got.equals(want)
    if (!same && mismatches++ < 3) t.fail(`environment ${k}: ${JSON.stringify(env).slice(0, 300)} cl=${cl}: got ${String(got).slice(0, 200)}`)
  }
  t.equal(mismatches, 0, 'no mismatch')
  t.ok(errors > 50, `${errors} environments refused`)
  t.ok(big > 5, `${big} environments over 64 KiB (the scratch grown, then let go)`)
})

t.test('an environment over 64 KiB, then a small one: the bytes of each are their own', async (t) => {
  const large = { A: 'x'.repeat(100_000), B: 'y' }
  t.same(encodeScgiHead(large, 7), specEncode(large, 7))
  const small = { C: 'z' }
  t.same(encodeScgiHead(small, 0), specEncode(small, 0))
})

/** A browser-like CGI environment of 30 variables, each object fresh (its strings too). */
function freshEnv (i: number): Record<string, string> {
  const env: Record<string, string> = {
    GATEWAY_INTERFACE: 'CGI/1.1', SERVER_SOFTWARE: 'proxycore/0.1.0', SERVER_PROTOCOL: 'HTTP/1.1',
    REQUEST_METHOD: 'GET', REQUEST_URI: `/app/index.py?page=${i}&sort=desc`, QUERY_STRING: `page=${i}&sort=desc`,
    SCRIPT_NAME: '/app/index.py', SCRIPT_FILENAME: '/var/www/app/index.py', DOCUMENT_ROOT: '/var/www/app', PATH_INFO: '',
    REMOTE_ADDR: '127.0.0.1', REMOTE_PORT: String(40000 + (i % 20000)), SERVER_ADDR: '127.0.0.1', SERVER_PORT: '18081',
    SERVER_NAME: 'localhost', REQUEST_SCHEME: 'http', HTTP_HOST: 'localhost:18081',
    HTTP_USER_AGENT: 'Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0',
    HTTP_ACCEPT: 'text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8', HTTP_ACCEPT_LANGUAGE: 'en-US,en;q=0.5',
    HTTP_ACCEPT_ENCODING: 'gzip, deflate, br, zstd', HTTP_REFERER: 'http://localhost:18081/index.py?page=2',
    HTTP_COOKIE: `session=${i.toString(16).padStart(32, '0')}; theme=dark`, HTTP_UPGRADE_INSECURE_REQUESTS: '1',
    HTTP_SEC_FETCH_DEST: 'document', HTTP_SEC_FETCH_MODE: 'navigate', HTTP_SEC_FETCH_SITE: 'same-origin',
    HTTP_SEC_FETCH_USER: '?1', HTTP_PRIORITY: 'u=0, i', HTTP_X_REQUEST_ID: `6f1c2d3e-4b5a-6978-8a9b-${String(i).padStart(12, '0')}`,
  }
  return env
}

async function post<T> (session: Session, method: string, params?: object): Promise<T> {
  return new Promise((resolve, reject) => session.post(method, params ?? {}, (err, res) => err ? reject(err) : resolve(res as T)))
}

interface ProfileNode { selfSize: number, children?: ProfileNode[], callFrame?: { functionName: string, url: string, lineNumber: number } }
function dumpSites (head: ProfileNode, n: number, path = ''): void {
  for (const c of head.children ?? []) {
    const here = `${path} > ${c.callFrame?.functionName ?? ''}:${(c.callFrame?.lineNumber ?? 0) + 1}`
    if (c.selfSize / n >= 5) console.error((c.selfSize / n).toFixed(1), here.slice(-200))
    dumpSites(c, n, here)
  }
}
function totalSize (n: ProfileNode): number {
  let s = n.selfSize
  for (const c of n.children ?? []) s += totalSize(c)
  return s
}

t.test('a fresh 30-variable environment: under 1 KB allocated per head (it was ~7.5 KB)', async (t) => {
  const N = 4000
  const envs = Array.from({ length: N }, (_, i) => freshEnv(i))
  for (let i = 0; i < 2000; i++) encodeScgiHead(freshEnv(i), 0) // the JIT's first compiles are not the steady state
  const keep: Buffer[] = new Array(N)
  const session = new Session()
  session.connect()
  t.teardown(() => { session.disconnect() })
  await post(session, 'HeapProfiler.enable')
  await post(session, 'HeapProfiler.startSampling', {
    samplingInterval: 64, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: true,
  })
  for (let i = 0; i < N; i++) keep[i] = encodeScgiHead(envs[i], 0)
  const { profile } = await post<{ profile: { head: ProfileNode } }>(session, 'HeapProfiler.stopSampling')
  const perHead = totalSize(profile.head) / N
  if (process.env.SCGI_ALLOC_SITES === '1') dumpSites(profile.head, N)
  const length = keep[0].length
  t.comment(`${perHead.toFixed(0)} B sampled per head of ${length} bytes (everything allocated while sampling, divided by ${N})`)
  t.ok(perHead < 1000, `${perHead.toFixed(0)} B per head`)
  t.same(keep[N - 1], specEncode(envs[N - 1], 0), 'and the bytes are right')
})
