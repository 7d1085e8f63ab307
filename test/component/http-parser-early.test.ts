/**
 * The HTTP adapter compiles undici's llhttp WebAssembly module while the proxy is created
 * (src/protocols/http/client.ts compileParserEarly), so that with `proxycore serve`'s flags the
 * optimizing compile and its scratch memory are over before the first request. That only helps
 * if undici's own compile, on its first connection, is of the very same bytes: V8 then finds the
 * module in its per-process cache. This checks both, in a child process that records every
 * `new WebAssembly.Module` with the phase it happened in and a hash of the bytes.
 */
import t from 'tap'
import { pathToFileURL } from 'node:url'
import { join } from 'node:path'
import { compileParserEarly } from '../../src/protocols/http/client.js'
import { guardLeaks } from '../helpers/leaks.js'
import { runNode } from '../helpers/run-node.js'
import { oneRequestThroughProxy } from '../helpers/one-request.js'
import { ensureBuilt, root } from '../cli/run.js'

// Every `new WebAssembly.Module` recorded with the phase it happened in and a hash of its bytes.
const CHILD = (index: string): string => `
import { createHash } from 'node:crypto'
const compiles = []
let phase = 'import'
const Module = WebAssembly.Module
WebAssembly.Module = function (bytes) {
  compiles.push({ phase, sha256: createHash('sha256').update(bytes).digest('hex') })
  return new Module(bytes)
}
${oneRequestThroughProxy(index, { beforeCreate: "phase = 'create'", afterCreate: "phase = 'request'" })}
console.log(JSON.stringify({ text, compiles }))`

t.test('the parser is compiled while the proxy is created, from the bytes undici compiles', async (t) => {
  guardLeaks(t)
  await ensureBuilt()
  const index = pathToFileURL(join(root, 'dist', 'index.js')).href
  for (const simd of ['0', '1']) {
    const r = await runNode(['--input-type=module', '-e', CHILD(index)], {
      cwd: root,
      env: { ...process.env, NODE_OPTIONS: '', UNDICI_NO_WASM_SIMD: simd },
    })
    t.equal(r.code, 0, r.stderr)
    const out = JSON.parse(r.stdout) as { text: string, compiles: Array<{ phase: string, sha256: string }> }
    t.equal(out.text, '200 via /x', `UNDICI_NO_WASM_SIMD=${simd}: the request went through the HTTP adapter`)
    const early = out.compiles.filter((c) => c.phase === 'create')
    const late = out.compiles.filter((c) => c.phase === 'request')
    t.equal(early.length, 1, `UNDICI_NO_WASM_SIMD=${simd}: one compile while the proxy is created`)
    t.ok(late.length >= 1, `UNDICI_NO_WASM_SIMD=${simd}: undici compiles on its first connection`)
    t.same(late.map((c) => c.sha256), late.map(() => early[0]?.sha256), `UNDICI_NO_WASM_SIMD=${simd}: the same bytes`)
  }
})

t.test('compileParserEarly compiles once and keeps the module', async (t) => {
  const first = compileParserEarly()
  t.ok(first !== null, 'a module')
  t.equal(compileParserEarly(), first, 'the same module the second time')
})
