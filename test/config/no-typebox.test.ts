/**
 * A valid config never loads TypeBox (~13 MiB RSS alone): the generated validators check it.
 * Fresh processes run the built package under record-loads.mjs, which lists every module they load
 * (ES modules and CommonJS); none of `createProxy` with every built-in protocol, nor `proxycore
 * serve`, may load one under node_modules/@sinclair/typebox. An invalid config must load it (TypeBox
 * words the issues): through import() for the config shape, through require() for the HTTP
 * adapter's options, which shows the recorder sees both module systems.
 * Neither may `import` a CommonJS package either: each dependency that ships CommonJS goes through
 * `require` (src/lazy.ts says why: ~7 MiB per process).
 */
import t from 'tap'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { guardLeaks } from '../helpers/leaks.js'
import { runNode } from '../helpers/run-node.js'
import { ensureBuilt, root, serve } from '../cli/run.js'

const preload = pathToFileURL(join(root, 'test', 'helpers', 'record-loads.mjs')).href
const index = pathToFileURL(join(root, 'dist', 'index.js')).href

/** Every built-in protocol; the cgi route runs on a pipe spawn (nothing starts before a request). */
function allProtocols (dir: string): Record<string, unknown> {
  return {
    routes: [
      { protocol: 'http', backends: ['127.0.0.1:9'], match: { prefix: '/h/' }, options: { connections: 4, keepAliveTimeout: '2s' } },
      { protocol: 'fastcgi', backends: ['127.0.0.1:9'], docroot: dir, match: { extension: '.php' }, timeouts: { connect: '1s' }, maxBodySize: '1MiB' },
      { protocol: 'scgi', backends: ['127.0.0.1:9'], scriptFilename: join(dir, 'app'), match: { prefix: '/s/' } },
      { protocol: 'cgi', spawn: 'cgi', docroot: dir, match: { prefix: '/cgi-bin/' } },
    ],
    spawns: { cgi: { socketType: 'pipe', launcher: 'direct' } },
  }
}

// createProxy for each config in turn (closing each), printing `ok` or the issue paths.
const CHILD = `
const { createProxy, silentLogger } = await import(${JSON.stringify(index)})
for (const config of JSON.parse(process.argv[1])) {
  try {
    const proxy = await createProxy({ logger: silentLogger, ...config })
    await proxy.close()
    console.log('ok')
  } catch (err) {
    if (err.issues === undefined) throw err
    console.log(err.issues.map((i) => i.path).join(' '))
  }
}`

/** The modules a process loaded, from its record file. */
function loaded (file: string): string[] {
  return readFileSync(file, 'utf8').split('\n').filter((l) => l !== '')
}
const typebox = (urls: string[]): string[] => urls.filter((u) => u.includes('/node_modules/@sinclair/typebox/'))
/** CommonJS files of proxycore's dependencies that came in through `import` (not tap's own hooks). */
const dependencies = Object.keys((JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { dependencies: Record<string, string> }).dependencies)
const importedCommonjs = (urls: string[]): string[] => urls.filter((u) => u.startsWith('esm-commonjs ') && dependencies.some((d) => u.includes(`/node_modules/${d}/`)))

async function createProxies (dir: string, configs: unknown[]): Promise<{ stdout: string, urls: string[] }> {
  const record = join(dir, `loads-${Math.random().toString(36).slice(2)}.txt`)
  writeFileSync(record, '')
  const r = await runNode(['--import', preload, '--input-type=module', '-e', CHILD, JSON.stringify(configs)], {
    cwd: root,
    env: { ...process.env, NODE_OPTIONS: '', RECORD_LOADS: record },
  })
  if (r.code !== 0) throw new Error(`child exited ${r.code}:\n${r.stderr}`)
  return { stdout: r.stdout, urls: loaded(record) }
}

t.test('createProxy with a valid config loads no TypeBox module', async (t) => {
  guardLeaks(t)
  await ensureBuilt()
  const dir = mkdtempSync(join(tmpdir(), 'pc-no-typebox-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const full = allProtocols(dir)
  const { spawns: _, ...noSpawns } = full
  noSpawns.routes = (noSpawns.routes as unknown[]).slice(0, 3)

  const valid = await createProxies(dir, [full, noSpawns])
  t.equal(valid.stdout, 'ok\nok\n', 'with spawns (embedder schema) and without (route schema)')
  t.ok(valid.urls.some((u) => u.endsWith('/dist/config/validators.generated.js')), 'checked by the generated validators')
  t.ok(valid.urls.some((u) => u.includes('/node_modules/undici/')), 'the recorder sees CommonJS packages (undici, for the http route)')
  t.same(typebox(valid.urls), [], 'no module under @sinclair/typebox')
  t.same(importedCommonjs(valid.urls), [], 'no CommonJS package through import')

  const shape = await createProxies(dir, [{ ...full, routes: 'none' }])
  t.equal(shape.stdout, '/routes\n')
  t.ok(typebox(shape.urls).some((u) => u.includes('/build/esm/')), 'an invalid shape imports TypeBox to word the issue')

  const options = await createProxies(dir, [{ routes: [{ protocol: 'http', backends: ['127.0.0.1:9'], options: { connections: 0 } }] }])
  t.equal(options.stdout, '/routes/0/options/connections\n')
  t.ok(typebox(options.urls).some((u) => u.includes('/build/cjs/')), 'invalid HTTP options require TypeBox to word the issue')
})

t.test('proxycore serve with a valid config loads no TypeBox module', async (t) => {
  guardLeaks(t)
  const dir = mkdtempSync(join(tmpdir(), 'pc-no-typebox-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const file = join(dir, 'proxycore.json')
  writeFileSync(file, JSON.stringify({ listen: '127.0.0.1:0', ...allProtocols(dir) }))
  const record = join(dir, 'loads.txt')
  writeFileSync(record, '')
  const s = await serve(file, { NODE_OPTIONS: `--import=${preload}`, RECORD_LOADS: record })
  s.child.kill('SIGTERM')
  t.equal(await s.exited, 0, 'exit 0 after SIGTERM')
  const urls = loaded(record)
  t.ok(urls.some((u) => u.endsWith('/dist/cli/main.js')), 'the recorder ran in the serve process')
  t.ok(urls.some((u) => u.endsWith('/dist/config/validators.generated.js')), 'checked by the generated validators')
  t.same(typebox(urls), [], 'no module under @sinclair/typebox')
  t.same(importedCommonjs(urls), [], 'no CommonJS package through import')
})
