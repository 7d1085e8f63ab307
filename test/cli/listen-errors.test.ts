/**
 * `serve` failing to bind a `listen` entry is one log line naming the address as the config writes
 * it, exit 1, no stack. A unix socket's error carries port -1 (node), which was shown as
 * `/dir/x.sock:-1` instead of `unix:/dir/x.sock`; a host name that does not resolve was `start
 * failed` with the resolver error's stack.
 */
import t from 'tap'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { guardLeaks } from '../helpers/leaks.js'
import { runCli } from './run.js'

const noStack = /\n\s+at |"stack"|start failed/

function tmp (t: { teardown: (fn: () => void) => void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'pc-listen-errors-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

async function serveError (t: { teardown: (fn: () => void) => void }, listen: string): Promise<{ code: number | null, err: Record<string, unknown> | undefined, stderr: string }> {
  const file = join(tmp(t), 'proxycore.yaml')
  writeFileSync(file, `listen: ${JSON.stringify(listen)}\nroutes: []\n`)
  const r = await runCli(['serve', file], { PROXYCORE_LOG_FORMAT: 'json' })
  const lines = r.stderr.trim().split('\n').map((l) => { try { return JSON.parse(l) as Record<string, unknown> } catch { return { msg: l } } })
  return { code: r.code, err: lines.find((l) => l.level === 50), stderr: r.stderr }
}

t.test('a unix socket in a directory that does not exist: the address as unix:/path', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  const sock = join(tmp(t), 'missing-dir', 'http.sock')
  const r = await serveError(t, `unix:${sock}`)
  t.equal(r.code, 1)
  t.equal(r.err?.address, `unix:${sock}`)
  // libuv reports a missing directory as EACCES, as it does a read-only one.
  t.match(r.err?.msg, `cannot listen on unix:${sock}: permission denied`)
  t.match(r.err?.msg, /an existing, writable directory/)
  t.notMatch(r.stderr, noStack)
})

t.test('a host name that does not resolve: one line naming it, exit 1, no stack', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  // .invalid never resolves (RFC 6761).
  const r = await serveError(t, 'no-such-host.invalid:8089')
  t.equal(r.code, 1)
  t.match(r.err, { address: 'no-such-host.invalid:8089', msg: /^cannot listen on no-such-host\.invalid:8089: host name not found \(/ })
  t.match(r.err?.code, /^(ENOTFOUND|EAI_AGAIN|EAI_FAIL)$/)
  t.notMatch(r.stderr, noStack)
})
