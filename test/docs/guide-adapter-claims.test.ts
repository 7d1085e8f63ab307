/**
 * docs/guides/writing-an-adapter.md and docs/adapters.md, against the BUILT package (dist/*.d.ts and
 * dist/*.js, resolved as `proxycore` from a scratch project whose node_modules/proxycore is this
 * checkout), as a user outside the repository gets them:
 *
 * - the guide's adapter, written as it says (its "1. The adapter object" block, with the exchange
 *   class of examples/uwsgi-adapter/adapter.ts that it walks through, importing `proxycore`), and
 *   its "3. Registering it" block type-check under strict settings against dist's .d.ts;
 * - every API name and signature the two documents tell an adapter author to use exists so in
 *   dist's .d.ts (a file that calls each one as the documents describe must type-check);
 * - that adapter, transpiled and run from the scratch project with the guide's registration block
 *   (socket and script changed to a real uWSGI), serves requests: the WSGI status and headers, a
 *   POST body, a chunked body with its length known (needsContentLength), 400 ERR_BAD_HEADER_VALUE
 *   for vars over 64 KiB, and `options` refused as a ConfigError at the route's options path;
 * - the test/ helpers the guide names exist.
 */
import t from 'tap'
import { spawn } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { request } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import ts from 'typescript'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { ensureBuilt, root } from '../cli/run.js'
import { ECHO_APP, startUwsgi, uwsgiSkip } from '../scgi/uwsgi-peer.js'
import { project, userEnv } from './snippets.js'

const guidePath = join(root, 'docs/guides/writing-an-adapter.md')
const guide = readFileSync(guidePath, 'utf8')
const seam = readFileSync(join(root, 'docs/adapters.md'), 'utf8')
const example = readFileSync(join(root, 'examples/uwsgi-adapter/adapter.ts'), 'utf8')

/** The ```ts blocks of the guide's section whose heading starts with `heading`. */
function section (heading: string): string[] {
  const start = guide.indexOf(`\n## ${heading}`)
  if (start === -1) throw new Error(`no section "${heading}" in the guide`)
  const end = guide.indexOf('\n## ', start + 4)
  return [...guide.slice(start, end === -1 ? undefined : end).matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => m[1])
}

/**
 * The adapter module a reader ends up with: the guide's adapter object, and the example's encoder
 * and exchange class (what section 2 walks through) with their imports from `proxycore`.
 */
function adapterModule (): string {
  const [object] = section('1. The adapter object')
  const own = /^import \{([^}]*)\} from 'proxycore'/.exec(object)
  if (own === null) throw new Error('the adapter block does not import from proxycore')
  const have = new Set(own[1].split(',').map((n) => n.trim().replace(/^type /, '')))
  const imports = /import \{([^}]*)\} from '\.\.\/\.\.\/src\/index\.js'/.exec(example)
  if (imports === null) throw new Error('the example no longer imports ../../src/index.js')
  const rest = imports[1].split(',').map((n) => n.trim()).filter((n) => n !== '' && !have.has(n.replace(/^type /, '')))
  const body = example.slice(example.indexOf('export type UwsgiOptions'), example.indexOf('export const uwsgiAdapter'))
  if (body.length < 500) throw new Error('the example\'s exchange class was not found')
  return `import type { Socket } from 'node:net'\nimport { ${rest.join(', ')} } from 'proxycore'\n${object}\n${body}`
}


// Each line is one sentence of the documents, as code; a type error names the claim that broke.
const CLAIMS = `
import type { Socket } from 'node:net'
import {
  CgiBodyFramer, CgiResponseParser, ConfigError, OneShotClient, ProxyError, buildCgiEnv, createProxy, deliverCgiHead,
  fromSocketError, getAdapter, isAborted, registerAdapter, statusFor, toProxyError, unwatchAbort, watchAbort,
  type AdapterCapabilities, type BackendClient, type CgiEnvInput, type CgiHead, type CgiPushResult, type CgiResponseParserOptions,
  type ClientContext, type Endpoint, type Exchange, type FlowControl, type ProtocolAdapter, type ResponseHandler, type UpgradeHandler
} from 'proxycore'

// adapters.md, "The seam".
const caps: AdapterCapabilities = { keepAlive: false, multiplex: false, upgrade: false, cgiEnv: true, needsContentLength: true, perRequestProcess: false }
export function seam (a: ProtocolAdapter<{ n: number }>, e: Endpoint, ctx: ClientContext, x: Exchange, h: ResponseHandler, u: UpgradeHandler): void {
  const name: string = a.name
  const c: AdapterCapabilities = a.capabilities
  const opts: { n: number } = a.parseOptions({ n: 1 } as unknown, '/routes/3/options')
  const client: BackendClient = a.createClient(e, opts, ctx)
  client.dispatch(x, h)
  client.upgrade?.(x, u)
  const inflight: number = client.inflight
  const closed: Promise<void> = client.close()
  client.destroy(new Error('x'))
  client.destroy()
  void [name, c, inflight, closed, caps]
}
// ClientContext: connect(endpoint), limits.maxResponseHeadSize, log, processes.
export async function context (ctx: ClientContext, e: Endpoint): Promise<void> {
  const s: Socket = await ctx.connect(e)
  const max: number = ctx.limits.maxResponseHeadSize
  ctx.log.error({ adapter: 'x' }, 'msg')
  const started = ctx.processes?.start
  void [s, max, started]
}
// The response contract: the calls an adapter makes, the optional ones through ?.
export function contract (h: ResponseHandler, flow: FlowControl): void {
  h.onInformational?.(103, ['link', '</a.css>; rel=preload'])
  h.onHead(200, ['content-type', 'text/plain'], flow, 'OK')
  h.onHead(200, ['content-type', 'text/plain'], { resume: () => {} })
  const more: boolean = h.onData(Buffer.from('x'))
  h.onEnd(['x-trailer', 'v'])
  h.onEnd()
  h.onError(new ProxyError('ERR_BACKEND_CLOSED'))
  h.onLocalRedirect?.('/elsewhere')
  const takes: boolean | undefined = h.takesLocalRedirects?.()
  h.onStderr?.(Buffer.from('warning'))
  h.closeAfterResponse?.()
  flow.resume()
  void [more, takes]
}
// Exchange: env, contentLength, body, method; aborts through signal, setAbortHandler, aborted, and the helpers.
export function exchange (x: Exchange): void {
  const env: Readonly<Record<string, string>> | null = x.env
  const len: number | null = x.contentLength
  const body = x.body
  body?.pipe(process.stdout, { end: false })
  const method: string = x.method
  const signal: AbortSignal = x.signal
  const aborted: boolean | undefined = x.aborted
  const fn = (): void => {}
  x.setAbortHandler?.(fn)
  watchAbort(x, fn)
  unwatchAbort(x, fn)
  const was: boolean = isAborted(x)
  void [env, len, method, signal, aborted, was]
}
// Errors: new ProxyError(code, detail, { phase, backend, cause }), replayable, statusFor, the mappers.
export function errors (err: NodeJS.ErrnoException, e: Endpoint): number {
  const p = new ProxyError('ERR_BAD_HEADER_VALUE', 'too big', { phase: 'connect', backend: e.id, cause: err })
  p.replayable = true
  const mapped: ProxyError = fromSocketError(err, 'connect', e.id)
  const body: ProxyError = fromSocketError(err, 'body', e.id)
  const any: ProxyError = toProxyError(new Error('x'))
  const c = new ConfigError([{ path: '/routes/3/options/foo', message: 'takes no options', found: 1 }])
  void [mapped, body, any, c.issues]
  return statusFor(p)
}
// Shared pieces for CGI-family protocols.
export function cgi (x: Exchange, h: ResponseHandler, chunk: Buffer, input: CgiEnvInput): void {
  const opts: CgiResponseParserOptions = { maxHeadSize: 8192, nph: true }
  const parser = new CgiResponseParser(opts)
  const r: CgiPushResult = parser.push(chunk)
  if ('error' in r) { h.onError(r.error); return }
  if (!r.done) { const atEof: ProxyError = parser.end(); h.onError(atEof); return }
  const head: CgiHead = r.head
  const rest: Buffer = r.rest
  const framer = CgiBodyFramer.forResponse(head, x.method)
  const part: Buffer = framer.take(rest)
  const complete: boolean = framer.complete
  const short: ProxyError | null = framer.eof()
  const how: 'redirect' | 'body' = deliverCgiHead(head, h, { resume: () => {} })
  h.onHead(head.status, head.headers, { resume: () => {} }, head.statusText)
  const env: Record<string, string> = buildCgiEnv(input)
  void [part, complete, short, how, env]
}
// OneShotClient<X>(endpoint, make(ex, handler, done), stop(x, err)): the whole BackendClient.
class Job { constructor (readonly done: (j: Job) => void) {} start (): void { this.done(this) } abort (_err: ProxyError): void {} }
export function oneShot (e: Endpoint): BackendClient {
  return new OneShotClient<Job>(e, (_ex, _h, done) => new Job(done), (j, err) => j.abort(err))
}
// Registering: globally by name, or per proxy; getAdapter returns the guarded form.
export async function registering (a: ProtocolAdapter): Promise<void> {
  registerAdapter(a)
  const guarded: ProtocolAdapter | undefined = getAdapter(a.name)
  const proxy = await createProxy({ adapters: [a], routes: [{ match: { prefix: '/app/' }, protocol: a.name, backends: ['unix:/run/app/uwsgi.sock'] }] })
  await proxy.close()
  void guarded
}
`

/**
 * Type-check, in one program (one load of @types/node and dist's .d.ts), the files a reader writes:
 * the adapter module, the guide's registration block, the uwsgi README's block, and CLAIMS. The
 * diagnostics by file name.
 */
function typeCheckAll (dir: string): Map<string, string[]> {
  const [register] = section('3. Registering it')
  const readme = readFileSync(join(root, 'examples/uwsgi-adapter/README.md'), 'utf8')
  const readmeBlocks = [...readme.matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => m[1])
  if (readmeBlocks.length !== 1) throw new Error(`examples/uwsgi-adapter/README.md has ${readmeBlocks.length} ts blocks, expected 1`)
  const files: Record<string, string> = {
    'adapter.ts': adapterModule(),
    'register.ts': `import { uwsgiAdapter } from './adapter.js'\n${register}\nregisterAdapter(uwsgiAdapter)\nawait proxy.close()\n`,
    'readme.ts': `${readmeBlocks[0]}\nawait proxy.close()\n`,
    'claims.ts': CLAIMS,
  }
  const options: ts.CompilerOptions = {
    target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.NodeNext, moduleResolution: ts.ModuleResolutionKind.NodeNext,
    lib: ['lib.es2023.d.ts'], types: ['node'], typeRoots: [join(root, 'node_modules', '@types')], strict: true,
    skipLibCheck: false, noEmit: true, verbatimModuleSyntax: true,
  }
  for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text)
  const program = ts.createProgram(Object.keys(files).map((f) => join(dir, f)), options)
  const resolved = program.getSourceFiles().map((f) => f.fileName).filter((f) => f.includes('/dist/index.d.ts'))
  if (resolved.length !== 1 || !resolved[0].startsWith(root)) throw new Error(`proxycore did not resolve to ${root}dist/index.d.ts: ${resolved.join(', ')}`)
  const out = new Map<string, string[]>(Object.keys(files).map((f) => [f, []]))
  for (const d of ts.getPreEmitDiagnostics(program)) {
    const file = d.file?.fileName ?? '?'
    const key = file.startsWith(dir) ? file.slice(dir.length + 1) : 'elsewhere'
    const line = `${file}:${d.start !== undefined && d.file !== undefined ? d.file.getLineAndCharacterOfPosition(d.start).line + 1 : '?'}: TS${d.code} ${ts.flattenDiagnosticMessageText(d.messageText, '\n')}`
    out.set(key, [...(out.get(key) ?? []), line])
  }
  return out
}

await ensureBuilt()
const tsDir = mkdtempSync(join(tmpdir(), 'pc-doc-adapter-ts-'))
t.teardown(() => rmSync(tsDir, { recursive: true, force: true }))
mkdirSync(join(tsDir, 'node_modules'))
symlinkSync(root, join(tsDir, 'node_modules', 'proxycore'))
writeFileSync(join(tsDir, 'package.json'), JSON.stringify({ name: 'my-adapter', type: 'module', private: true }))
let diagnostics: Map<string, string[]> | null = null
const diag = (file: string): string[] => { diagnostics ??= typeCheckAll(tsDir); return [...(diagnostics.get(file) ?? []), ...(diagnostics.get('elsewhere') ?? [])] }

t.test('the guide\'s adapter and its registration type-check against dist/*.d.ts', async (t) => {
  t.same(diag('adapter.ts'), [], 'the adapter module: no type error')
  t.same(diag('register.ts'), [], '"3. Registering it": no type error')
})

t.test('examples/uwsgi-adapter/README.md: its registration block type-checks against dist/*.d.ts', async (t) => {
  t.same(diag('readme.ts'), [], 'no type error')
})

t.test('every API name the guide and docs/adapters.md give exists in dist/*.d.ts with that signature', async (t) => {
  t.same(diag('claims.ts'), [], 'no type error')
  // The table of adapters.md must not present an optional handler method as one an adapter may call
  // unguarded: each optional member of ResponseHandler is marked optional there.
  const handlerDts = readFileSync(join(root, 'dist/core/types.d.ts'), 'utf8')
  const iface = handlerDts.slice(handlerDts.indexOf('export interface ResponseHandler'))
  const optional = [...iface.slice(0, iface.indexOf('\n}')).matchAll(/^\s+(\w+)\?\(/gm)].map((m) => m[1])
  t.same(optional.sort(), ['closeAfterResponse', 'onInformational', 'onLocalRedirect', 'onStderr', 'takesLocalRedirects'])
  for (const name of optional) {
    const row = seam.split('\n').find((l) => l.startsWith(`| \`${name}(`))
    t.ok(row !== undefined && /optional/.test(row), `adapters.md marks ${name} optional`, { row })
  }
})

t.test('the test/ helpers the guide names are in the repository', async (t) => {
  const named = [...new Set([...guide.matchAll(/`(test\/[\w/.-]+\.ts)`/g)].map((m) => m[1]))]
  t.ok(named.length >= 3, `the guide names ${named.join(', ')}`)
  for (const f of named) t.ok(existsSync(join(root, f)), `${f} exists`)
  t.match(example, /from '\.\.\/\.\.\/src\/index\.js'/, 'the example imports ../../src/index.js, as the guide says')
})

interface Answer { status: number, headers: Record<string, string | string[] | undefined>, body: string }

function ask (port: number, method: string, path: string, opts: { headers?: Record<string, string>, body?: string, chunked?: boolean } = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method, path, headers: opts.headers, agent: false }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (c: string) => { body += c })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }))
      res.on('error', reject)
    })
    req.on('error', reject)
    if (opts.chunked === true && opts.body !== undefined) { req.write(opts.body.slice(0, 2)); req.end(opts.body.slice(2)) } else req.end(opts.body)
  })
}

t.test('the guide\'s adapter, run from a project against the built package, serves real uWSGI', { skip: uwsgiSkip() }, async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  const peer = await startUwsgi('uwsgi', ECHO_APP)
  t.teardown(() => peer.stop())
  const dir = project(t)
  const js = (src: string): string => ts.transpileModule(src, { compilerOptions: { target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.ESNext, verbatimModuleSyntax: true } }).outputText
  writeFileSync(join(dir, 'adapter.mjs'), js(adapterModule()))
  const [register] = section('3. Registering it')
  t.match(register, /backends: \['unix:\/run\/app\/uwsgi\.sock'\], scriptFilename: '\/srv\/app\/app\.py'/)
  const main = js(register.replace('unix:/run/app/uwsgi.sock', `unix:${peer.socketPath}`).replace('/srv/app/app.py', ECHO_APP)) + `
import http from 'node:http'
const server = http.createServer({ maxHeaderSize: 200000 }, proxy.handler)
server.listen(0, '127.0.0.1', () => console.log('port', server.address().port))
process.once('SIGTERM', async () => { server.close(); await proxy.close() })
`
  writeFileSync(join(dir, 'main.mjs'), `import { uwsgiAdapter } from './adapter.mjs'\n${main}`)
  const child = spawn(process.execPath, ['main.mjs'], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'], env: { ...userEnv, PROXYCORE_LOG_LEVEL: 'silent' } })
  let out = ''
  child.stdout.on('data', (c: Buffer) => { out += c.toString() })
  child.stderr.on('data', (c: Buffer) => { out += c.toString() })
  const exited = new Promise<number | null>((resolve) => child.once('exit', resolve))
  t.teardown(async () => { if (child.exitCode === null) { child.kill('SIGKILL'); await exited } })
  t.ok(await waitFor(() => /port \d+/.test(out) || child.exitCode !== null, 20_000), 'the server starts')
  const port = Number(/port (\d+)/.exec(out)?.[1])
  t.ok(port > 0, `listening (${out.trim()})`)

  const got = await ask(port, 'GET', '/app/x?status=201')
  t.equal(got.status, 201, 'the WSGI status passes through')
  t.equal(got.headers['x-echo'], 'yes')
  t.match(JSON.parse(got.body), { env: { SCRIPT_NAME: '/app', PATH_INFO: '/x', QUERY_STRING: 'status=201', CONTENT_LENGTH: '0' } }, 'cgiEnv: the core built the environ')

  const post = JSON.parse((await ask(port, 'POST', '/app/p', { body: 'hello', headers: { 'content-type': 'text/plain' } })).body) as { body_len: number, env: Record<string, string> }
  t.equal(post.body_len, 5, 'a POST body arrives')
  t.equal(post.env.CONTENT_TYPE, 'text/plain')

  const chunked = JSON.parse((await ask(port, 'POST', '/app/c', { body: 'chunked!', chunked: true })).body) as { body_len: number, env: Record<string, string> }
  t.equal(chunked.env.CONTENT_LENGTH, '8', 'needsContentLength: a chunked body is spooled, its length known')
  t.equal(chunked.body_len, 8)

  const big = await ask(port, 'GET', '/app/big', { headers: { 'x-big': 'v'.repeat(70_000) } })
  t.equal(big.status, 400, 'vars over 64 KiB: 400 (ERR_BAD_HEADER_VALUE)')
  t.match(big.body, /ERR_BAD_HEADER_VALUE/)

  const head = await ask(port, 'HEAD', '/app/x?big=100000')
  t.equal(head.status, 200)
  t.equal(head.headers['content-length'], '100000', 'HEAD: the GET\'s Content-Length, no body, the answer not cut')

  child.kill('SIGTERM')
  t.equal(await exited, 0, 'SIGTERM: proxy.close() and exit 0')
})

t.test('the guide\'s parseOptions refuses options with a ConfigError at the route\'s options path', async (t) => {
  const dir = project(t)
  writeFileSync(join(dir, 'adapter.mjs'), ts.transpileModule(adapterModule(), { compilerOptions: { target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.ESNext, verbatimModuleSyntax: true } }).outputText)
  writeFileSync(join(dir, 'probe.mjs'), `import { uwsgiAdapter } from './adapter.mjs'
import { createProxy, ConfigError } from 'proxycore'
const routes = [{ match: { prefix: '/' }, protocol: 'http', backends: ['127.0.0.1:1'] },
  { match: { prefix: '/app/' }, protocol: 'uwsgi', backends: ['unix:/nonexistent.sock'], scriptFilename: '/srv/app/app.py', options: { foo: 1 } }]
try { await createProxy({ adapters: [uwsgiAdapter], routes }); console.log('accepted') }
catch (e) { console.log(JSON.stringify({ config: e instanceof ConfigError, issues: e.issues })) }
`)
  const child = spawn(process.execPath, ['probe.mjs'], { cwd: dir, env: userEnv, stdio: ['ignore', 'pipe', 'inherit'] })
  let out = ''
  child.stdout.on('data', (c: Buffer) => { out += c.toString() })
  await new Promise((resolve) => child.once('close', resolve))
  const r = JSON.parse(out) as { config: boolean, issues: Array<{ path: string, message: string }> }
  t.ok(r.config, 'a ConfigError')
  t.same(r.issues.map((i) => i.path), ['/routes/1/options'], 'one issue, at the path parseOptions was given')
  t.match(r.issues[0].message, /uwsgi adapter takes no options/)
})
