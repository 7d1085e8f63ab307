/**
 * The package as a developer gets it from the npm registry: `npm pack` of this checkout (into a
 * temporary directory, scripts off so the shared dist/ is not rebuilt), then `npm install <tarball>
 * --omit=dev` in a fresh ESM project with no C compiler on PATH, as docs/getting-started.md
 * ("Install") and docs/guides/cgi-and-git.md describe it. Checked on what was installed, not on
 * the checkout: the file list (no tests, bench or CI files; source maps whose sources are shipped;
 * no d.ts or module naming a devDependency), the install script's fallback and its advice, the
 * runtime imports with production dependencies only, the embedding snippet served through it,
 * `require()`, deep imports, the CLI from node_modules/.bin, and a strict TypeScript consumer
 * (moduleResolution node16 and bundler, with the repo's tsc). Reuses npm's cache (--prefer-offline).
 */
import t from 'tap'
import type { Test } from 'tap'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, realpathSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, posix } from 'node:path'
import { fileURLToPath } from 'node:url'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { answering, freePort, guideBlocks, must, run, stops, text, userEnv } from './snippets.js'

type Tap = Test

const repo = fileURLToPath(new URL('../..', import.meta.url))
const pkg = JSON.parse(readFileSync(join(repo, 'package.json'), 'utf8')) as {
  version: string, dependencies: Record<string, string>, devDependencies: Record<string, string>
}
const deps = new Set(Object.keys(pkg.dependencies))
const devOnly = new Set(Object.keys(pkg.devDependencies).filter((d) => !deps.has(d)))
const gettingStarted = guideBlocks(join(repo, 'docs/getting-started.md'))
const gsText = readFileSync(join(repo, 'docs/getting-started.md'), 'utf8')

/** The package a specifier names ('@scope/name' or 'name'), or null for relative and node: ones. */
function packageOf (spec: string): string | null {
  if (spec.startsWith('.') || spec.startsWith('/') || spec.startsWith('node:')) return null
  const parts = spec.split('/')
  return spec.startsWith('@') ? parts.slice(0, 2).join('/') : parts[0]
}

/** Found on PATH, or null. */
function onPath (name: string): string | null {
  for (const d of (process.env.PATH ?? '').split(':')) if (d !== '' && existsSync(join(d, name))) return join(d, name)
  return null
}

const npmPath = onPath('npm')
const npmCli = npmPath === null ? null : realpathSync(npmPath)
// A user's environment for npm: none of the npm_* variables a parent `npm test` would pass on.
const npmEnv: NodeJS.ProcessEnv = Object.fromEntries(Object.entries(userEnv).filter(([k]) => !/^npm_/i.test(k) && k !== 'CC'))

/** Run a program to its end with a deadline; output collected. */
async function exec (t: Tap, file: string, args: string[], cwd: string, env: NodeJS.ProcessEnv = npmEnv, timeoutMs = 180_000): Promise<{ code: number | null, out: string }> {
  const child = spawn(file, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  child.stdout.on('data', (c: Buffer) => { out += c.toString() })
  child.stderr.on('data', (c: Buffer) => { out += c.toString() })
  const closed = once(child, 'close') as Promise<[number | null]>
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs)
  t.teardown(async () => { if (child.exitCode === null && child.signalCode === null) { child.kill('SIGKILL'); await closed } })
  const [code] = await closed
  clearTimeout(timer)
  return { code, out }
}

/** Assert an exit code; the output goes to the diagnostics only when it is wrong. */
function exitsWith (t: Tap, r: { code: number | null, out: string }, code: number, what: string): void {
  t.equal(r.code, code, what)
  if (r.code !== code) t.comment(r.out)
}

const npm = async (t: Tap, args: string[], cwd: string, env: NodeJS.ProcessEnv = npmEnv): Promise<{ code: number | null, out: string }> =>
  await exec(t, process.execPath, [npmCli ?? 'npm', ...args], cwd, env)

const work = mkdtempSync(join(tmpdir(), 'audit37-pack-'))
t.teardown(() => rmSync(work, { recursive: true, force: true }))
const app = join(work, 'app')
const installed = join(app, 'node_modules', 'proxycore')

t.test('the file list of `npm pack`: nothing of the repo\'s own, maps and types complete', { timeout: 300_000 }, async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  if (npmCli === null) return t.fail('npm is not on PATH')
  const r = await npm(t, ['pack', '--dry-run', '--json', '--ignore-scripts'], repo)
  exitsWith(t, r, 0, 'npm pack --dry-run --json')
  const json = JSON.parse(r.out.slice(r.out.indexOf('['))) as Array<{ size: number, unpackedSize: number, files: Array<{ path: string }> }>
  const files = new Set(json[0].files.map((f) => f.path))
  t.comment(`tarball: ${json[0].size} bytes packed, ${json[0].unpackedSize} unpacked, ${files.size} files`)
  const foreign = [...files].filter((f) => /^(test|bench|examples|\.ci|\.github|node_modules|native\/build|\.cache)\//.test(f) ||
    /\.test\.[cm]?[jt]s$/.test(f) || /^tsconfig.*\.json$|^package-lock\.json$|\.tgz$/.test(f))
  t.same(foreign, [], 'no tests, bench, examples, CI files, builds or lockfiles')
  for (const f of ['package.json', 'dist/index.js', 'dist/index.d.ts', 'dist/cli/main.js', 'scripts/build-native.mjs', 'native/fork-server.c']) {
    t.ok(files.has(f), `ships ${f}`)
  }
  // docs/reference/config.md: the JSON Schema is schema/proxycore.schema.json.
  t.ok(files.has('schema/proxycore.schema.json'), 'the JSON Schema where docs/reference/config.md says')
  t.match(readFileSync(join(repo, 'docs/reference/config.md'), 'utf8'), /`schema\/proxycore\.schema\.json`/)

  const dangling: string[] = []
  const badTypes: string[] = []
  const badImports: string[] = []
  for (const f of files) {
    if (f.endsWith('.map')) {
      const map = JSON.parse(readFileSync(join(repo, f), 'utf8')) as { sources: string[], sourceRoot?: string }
      for (const s of map.sources) {
        const p = posix.normalize(posix.join(posix.dirname(f), map.sourceRoot ?? '', s))
        if (!files.has(p)) dangling.push(`${f} -> ${p}`)
      }
    } else if (f.endsWith('.d.ts')) {
      // Comments out first: they quote words ("read from 'spawn' on").
      const src = readFileSync(join(repo, f), 'utf8').replace(/\/\*[\s\S]*?\*\//g, '').replace(/^\s*\/\/(?!\/\s*<reference).*$/gm, '')
      const specs = [...src.matchAll(/(?:\bfrom\s*|\bimport\(\s*|<reference\s+(?:types|path)=)['"]([^'"]+)['"]/g)].map((m) => m[1])
      for (const s of specs) {
        const p = packageOf(s)
        if (p === null) {
          if (s.startsWith('node:')) continue
          const target = posix.normalize(posix.join(posix.dirname(f), s)).replace(/\.js$/, '.d.ts')
          if (!files.has(target)) badTypes.push(`${f}: ${s} (not in the tarball)`)
        } else if (!deps.has(p)) badTypes.push(`${f}: ${s} (${devOnly.has(p) ? 'a devDependency' : 'not a dependency'})`)
      }
    } else if (f.endsWith('.js') && f.startsWith('dist/')) {
      const src = readFileSync(join(repo, f), 'utf8')
      for (const m of src.matchAll(/^\s*(?:import|export)\b[^'";]*?\bfrom\s*['"]([^'"]+)['"]|^\s*import\s*['"]([^'"]+)['"]/gm)) {
        const s = m[1] ?? m[2]
        const p = packageOf(s)
        if (p === null) {
          if (!s.startsWith('node:') && !files.has(posix.normalize(posix.join(posix.dirname(f), s)))) badImports.push(`${f}: ${s} (not in the tarball)`)
        } else if (!deps.has(p)) badImports.push(`${f}: ${s}`)
      }
      // Lazy and dynamic loads name their package in a string literal.
      for (const m of src.matchAll(/['"]((?:@[\w.-]+\/)?[\w.-]+)(?:\/[^'"\s]*)?['"]/g)) if (devOnly.has(m[1])) badImports.push(`${f}: '${m[1]}…' (a devDependency)`)
    }
  }
  t.same(dangling, [], 'every source map names files the tarball holds')
  t.same(badTypes, [], 'no d.ts refers to a devDependency or to a file missing from the tarball')
  t.same(badImports, [], 'no module imports a devDependency or a missing file')
})

t.test('npm install <tarball> --omit=dev without a C compiler, then npm rebuild with one', { timeout: 300_000 }, async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  if (npmCli === null) return t.fail('npm is not on PATH')
  const packed = await npm(t, ['pack', '--ignore-scripts', '--pack-destination', work], repo)
  exitsWith(t, packed, 0, 'npm pack --pack-destination')
  const tarball = join(work, `proxycore-${pkg.version}.tgz`)
  t.ok(existsSync(tarball), 'the tarball is written where asked, not into the repo')
  t.notOk(existsSync(join(repo, `proxycore-${pkg.version}.tgz`)))

  // PATH with node and sh only: no cc, as on a machine without build tools.
  const bin = join(work, 'bin')
  mkdirSync(bin)
  symlinkSync(process.execPath, join(bin, 'node'))
  symlinkSync('/bin/sh', join(bin, 'sh'))
  mkdirSync(app)
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'app', version: '1.0.0', private: true, type: 'module' }))
  const noCc = { ...npmEnv, PATH: bin }
  const r = await npm(t, ['install', tarball, '--omit=dev', '--prefer-offline', '--no-audit', '--no-fund', '--foreground-scripts'], app, noCc)
  exitsWith(t, r, 0, 'no failed install without a compiler')
  t.match(r.out, /proxycore: no C compiler \(cc\); CGI uses the Perl fork server/, 'the install script says why')
  // The advice must work in an app: `npm run build` exists only in a checkout of the repository.
  t.match(r.out, /npm rebuild proxycore/, 'and tells an app how to build it later (docs/guides/cgi-and-git.md)')
  const said = /^proxycore: no C compiler.*$/m.exec(r.out)?.[0] ?? '(nothing)'
  t.ok(gsText.replace(/\s+/g, ' ').includes(said), `getting-started quotes it: ${said}`)
  const helper = join(installed, 'native', 'build', 'proxycore-fork-server')
  t.notOk(existsSync(helper), 'no helper built')
  t.same(readdirSync(app).sort(), ['node_modules', 'package-lock.json', 'package.json'], 'nothing lands in the app')
  for (const d of ['tap', 'typescript', 'fastify', 'express']) t.notOk(existsSync(join(app, 'node_modules', d)), `no devDependency installed (${d})`)
  for (const d of deps) t.ok(existsSync(join(app, 'node_modules', d, 'package.json')), `dependency ${d} installed`)

  if (onPath('cc') === null) return t.comment('no cc on this machine: the rebuild with a compiler is not tried')
  const rb = await npm(t, ['rebuild', 'proxycore', '--foreground-scripts'], app)
  exitsWith(t, rb, 0, 'npm rebuild proxycore')
  t.ok(existsSync(helper) && (statSync(helper).mode & 0o111) !== 0, 'npm rebuild proxycore builds the compiled helper, inside the package')
  t.same(readdirSync(dirname(helper)), ['proxycore-fork-server'], 'nothing else left next to it')
  t.same(readdirSync(app).sort(), ['node_modules', 'package-lock.json', 'package.json'], 'nothing lands in the app')
})

t.test('every runtime import resolves with production dependencies only', { timeout: 300_000 }, async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  writeFileSync(join(app, 'resolve.mjs'), `
import { createRequire } from 'node:module'
import { readFileSync, readdirSync } from 'node:fs'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
const deps = new Set(${JSON.stringify([...deps])})
const root = join(process.cwd(), 'node_modules/proxycore/dist')
const walk = (d) => readdirSync(d, { withFileTypes: true }).flatMap((e) => e.isDirectory() ? walk(join(d, e.name)) : [join(d, e.name)])
const bad = []
let n = 0
for (const f of walk(root).filter((f) => f.endsWith('.js'))) {
  const req = createRequire(f)
  for (const m of readFileSync(f, 'utf8').matchAll(/['"]((?:@[\\w.-]+\\/)?[\\w.-]+)(\\/[^'"\\s]*)?['"]/g)) {
    if (!deps.has(m[1])) continue
    n++
    try { req.resolve(m[1] + (m[2] ?? '')) } catch (e) { bad.push(f + ': ' + m[0] + ' ' + e.code) }
  }
  if (!f.endsWith('/cli/main.js')) await import(pathToFileURL(f).href)
}
console.log(JSON.stringify({ n, bad }))
`)
  const r = await exec(t, process.execPath, ['resolve.mjs'], app, userEnv)
  exitsWith(t, r, 0, 'resolve.mjs runs')
  const res = JSON.parse(r.out) as { n: number, bad: string[] }
  t.ok(res.n > 10, `${res.n} dependency specifiers found`)
  t.same(res.bad, [], 'each resolves from where it is loaded; every dist module imports')
})

t.test('the node:http snippet of getting-started, unchanged but for its ports, serves through the install', { timeout: 300_000 }, async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  const [up, port] = [await freePort(), await freePort()]
  let code = gettingStarted('### node:http', 'js')
  code = must(must(code, /\b3000\b/g, String(up)), /\b8080\b/g, String(port))
  writeFileSync(join(app, 'server.mjs'), code)
  const r = run(t, app, ['server.mjs'])
  const base = `http://127.0.0.1:${port}`
  await answering(`${base}/`, r)
  t.equal(await text(`${base}/api/users?id=7`), 'upstream saw GET /users?id=7\n')
  t.equal(await text(`${base}/`), 'served by node:http itself\n')
  await stops(t, r, 'SIGINT')
})

t.test('require(), deep imports and the package.json export, as getting-started says', { timeout: 300_000 }, async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  t.match(gsText, /`require\('proxycore'\)`/, 'getting-started says what require() gives')
  t.match(gsText, /ERR_PACKAGE_PATH_NOT_EXPORTED/, 'and that deep imports are refused')
  writeFileSync(join(app, 'cjs.cjs'), `
const out = {}
try { out.keys = Object.keys(require('proxycore')).sort().join(',') } catch (e) { out.error = e.code }
try { require('proxycore/dist/index.js') } catch (e) { out.deep = e.code }
out.version = require('proxycore/package.json').version
import('proxycore').then((m) => { out.esm = Object.keys(m).sort().join(','); console.log(JSON.stringify(out)) })
`)
  const r = await exec(t, process.execPath, ['cjs.cjs'], app, userEnv)
  exitsWith(t, r, 0, 'cjs.cjs runs')
  const o = JSON.parse(r.out) as { keys?: string, error?: string, deep?: string, version: string, esm: string }
  const requireModule = (process.features as { require_module?: boolean }).require_module === true
  if (requireModule) t.equal(o.keys, o.esm, `Node ${process.version}: require() gives the ES module's exports`)
  else t.equal(o.error, 'ERR_REQUIRE_ESM', `Node ${process.version}: require() is refused`)
  t.equal(o.deep, 'ERR_PACKAGE_PATH_NOT_EXPORTED', 'a deep import is refused')
  t.equal(o.version, pkg.version, "'proxycore/package.json' is exported")
  t.match(o.esm, /(^|,)createProxy(,|$)/)
})

t.test('the CLI from node_modules/.bin: --help, check and serve of the Track B files', { timeout: 300_000 }, async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  const cli = join(app, 'node_modules', '.bin', 'proxycore')
  const help = await exec(t, process.execPath, [npmCli ?? 'npm', 'exec', '--no', '--', 'proxycore', '--help'], app)
  exitsWith(t, help, 0, 'npx proxycore --help')
  t.match(help.out, new RegExp(`^proxycore ${pkg.version.replaceAll('.', '\\.')} `), 'npx proxycore --help')
  const port = await freePort()
  const b = readFileSync(join(repo, 'docs/getting-started.md'), 'utf8').slice(gsText.indexOf('## Track B'))
  const appMjs = /```js\n([\s\S]*?)```/.exec(b)
  const yaml = /```yaml\n([\s\S]*?)```/.exec(b)
  if (appMjs === null || yaml === null) return t.fail('Track B has no app.mjs or proxycore.yaml block')
  writeFileSync(join(app, 'app.mjs'), appMjs[1])
  // getting-started: the schema's path in an app, for `$schema:` in a proxycore.yaml next to package.json.
  const schemaAt = './node_modules/proxycore/schema/proxycore.schema.json'
  t.ok(gsText.replace(/\s+/g, ' ').includes(`\`$schema: ${schemaAt}\``), 'getting-started gives that path')
  t.ok(JSON.parse(readFileSync(join(app, schemaAt), 'utf8')), 'the schema is there')
  writeFileSync(join(app, 'proxycore.yaml'), `$schema: ${schemaAt}\n` + must(yaml[1], 'listen: 127.0.0.1:8080', `listen: 127.0.0.1:${port}`))
  const check = await exec(t, cli, ['check', 'proxycore.yaml'], app, userEnv)
  exitsWith(t, check, 0, 'proxycore check')
  t.equal(check.out, 'proxycore.yaml: ok (1 route(s), 1 spawn(s), 1 file(s))\n')

  const serve = spawn(cli, ['serve'], { cwd: app, env: userEnv, stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  serve.stdout.on('data', (c: Buffer) => { out += c.toString() })
  serve.stderr.on('data', (c: Buffer) => { out += c.toString() })
  const exited = once(serve, 'exit') as Promise<[number | null, string | null]>
  t.teardown(async () => { if (serve.exitCode === null && serve.signalCode === null) { serve.kill('SIGKILL'); await exited } })
  const base = `http://127.0.0.1:${port}`
  const up = await waitFor(async () => { try { return (await fetch(`${base}/hello`)).status === 200 } catch { return serve.exitCode !== null } }, 60_000, 50)
  t.ok(up && serve.exitCode === null, 'serve answers')
  if (!up) t.comment(out)
  t.match(await text(`${base}/hello`), /^hello from pid \d+, you asked for \/hello\n$/)
  serve.kill('SIGTERM')
  const timer = setTimeout(() => serve.kill('SIGKILL'), 30_000)
  const [code, signal] = await exited
  clearTimeout(timer)
  t.same([code, signal], [0, null], 'SIGTERM: stopped, exit 0')
})

t.test('a strict TypeScript consumer compiles the documented snippets (node16 and bundler)', { timeout: 300_000 }, async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  const ts = join(app, 'ts')
  mkdirSync(ts)
  writeFileSync(join(ts, 'gs.ts'), gettingStarted('### node:http', 'js'))
  const readme = readFileSync(join(repo, 'README.md'), 'utf8')
  const embed = /```ts\n([\s\S]*?)```/.exec(readme.slice(readme.indexOf('## Embed it')))
  if (embed === null) return t.fail('README has no ts block under "Embed it"')
  writeFileSync(join(ts, 'readme.ts'), embed[1])
  // Every name docs/ imports from 'proxycore', as a value or a type.
  const names = new Set<string>()
  const docs = (d: string): string[] => readdirSync(d, { withFileTypes: true }).flatMap((e) => e.isDirectory() ? docs(join(d, e.name)) : e.name.endsWith('.md') ? [join(d, e.name)] : [])
  for (const f of [...docs(join(repo, 'docs')), join(repo, 'README.md')]) {
    for (const m of readFileSync(f, 'utf8').matchAll(/import (type )?\{([^}]*)\} from 'proxycore'/g)) {
      for (const n of m[2].split(',').map((s) => s.trim().replace(/^type\s+/, ''))) if (/^\w+$/.test(n)) names.add(n)
    }
  }
  t.ok(names.has('createProxy') && names.has('ProtocolAdapter'), `names docs import: ${[...names].join(', ')}`)
  writeFileSync(join(ts, 'names.ts'), `import { ${[...names].join(', ')} } from 'proxycore'\nexport type { ${[...names].join(', ')} }\n`)
  const typesNode = JSON.parse(readFileSync(join(repo, 'node_modules/@types/node/package.json'), 'utf8')) as { version: string }
  const [maj, min] = typesNode.version.split('.').map(Number)
  // getting-started: "@types/node before 22.21 lacks the option: cast the options".
  const oldTypes = maj < 22 || (maj === 22 && min < 21)
  for (const [mode, module] of [['node16', 'Node16'], ['bundler', 'ESNext']]) {
    writeFileSync(join(ts, `tsconfig.${mode}.json`), JSON.stringify({
      compilerOptions: { strict: true, noEmit: true, target: 'ES2022', lib: ['ES2023'], module, moduleResolution: mode, skipLibCheck: false, exactOptionalPropertyTypes: true, types: ['node'], typeRoots: [join(repo, 'node_modules/@types')] },
      files: ['gs.ts', 'readme.ts', 'names.ts'],
    }))
    const r = await exec(t, process.execPath, [join(repo, 'node_modules/typescript/bin/tsc'), '-p', `tsconfig.${mode}.json`], ts, userEnv)
    const errors = r.out.split('\n').filter((l) => /error TS/.test(l))
    const rest = errors.filter((l) => !(oldTypes && /TS2353: .*'shouldUpgradeCallback' does not exist in type 'ServerOptions/.test(l)))
    t.same(rest, [], `moduleResolution ${mode}: no error (but shouldUpgradeCallback with @types/node ${typesNode.version})`)
  }
})
