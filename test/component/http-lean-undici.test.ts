/**
 * The HTTP adapter loads undici's Pool module, not the package entry (fetch, WebSocket, the cache,
 * mock agents…: ~8.5 MiB RSS and ~4 MiB of V8 heap more). It must be undici's own Pool class, and a
 * proxy that forwards a request must never have loaded `undici/index.js`.
 */
import t from 'tap'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { undiciPool, UNDICI_POOL_MODULE } from '../../src/protocols/http/client.js'
import { guardLeaks } from '../helpers/leaks.js'
import { runNode } from '../helpers/run-node.js'
import { oneRequestThroughProxy } from '../helpers/one-request.js'
import { ensureBuilt, root } from '../cli/run.js'

const require = createRequire(import.meta.url)

t.test('the adapter uses the very Pool class undici exports', async (t) => {
  t.equal(undiciPool(), (require('undici') as typeof import('undici')).Pool)
  t.equal(require(UNDICI_POOL_MODULE), undiciPool(), 'loaded from the Pool module path')
})

// A backend, the proxy in front of it, one request through; prints the status and body.
const CHILD = (index: string): string => `${oneRequestThroughProxy(index)}\nconsole.log(text)`

t.test('forwarding a request loads undici\'s Pool but not its package entry', async (t) => {
  guardLeaks(t)
  await ensureBuilt()
  const dir = mkdtempSync(join(tmpdir(), 'pc-lean-undici-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const record = join(dir, 'loads.txt')
  writeFileSync(record, '')
  const preload = pathToFileURL(join(root, 'test', 'helpers', 'record-loads.mjs')).href
  const index = pathToFileURL(join(root, 'dist', 'index.js')).href
  const r = await runNode(['--import', preload, '--input-type=module', '-e', CHILD(index)], {
    cwd: root,
    env: { ...process.env, NODE_OPTIONS: '', RECORD_LOADS: record },
  })
  t.equal(r.code, 0, r.stderr)
  t.equal(r.stdout, '200 via /x\n', 'the request went through the HTTP adapter')
  const undici = readFileSync(record, 'utf8').split('\n').filter((u) => u.includes('/node_modules/undici/'))
  t.ok(undici.some((u) => u.endsWith('/node_modules/undici/lib/dispatcher/pool.js')), 'the Pool module is loaded')
  t.same(undici.filter((u) => u.endsWith('/node_modules/undici/index.js')), [], 'the package entry is not')
  t.notOk(undici.some((u) => u.includes('/lib/web/fetch/')), 'nor fetch')
})
