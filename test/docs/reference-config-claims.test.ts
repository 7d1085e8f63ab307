/**
 * docs/reference/config.md, walked as a new operator: the claims about the file itself (YAML or
 * JSON, what YAML features do, every issue at its path and all of them in one run, durations and
 * sizes, `${VAR}` substitution) checked through loadConfig and the real CLI (`proxycore check`).
 * Not repeated here: `__proto__`, alias bombs and include entries (test/config/hostile.test.ts),
 * FIFOs, devices, nesting and BOM+CRLF YAML (test/config/special-files.test.ts), the fixture corpus
 * (test/config/fixtures.test.ts), route matching (test/component/route-normalization.test.ts).
 */
import t, { type Test } from 'tap'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { guardLeaks } from '../helpers/leaks.js'
import { getText, killAtTeardown, root, runCli, serve } from '../cli/run.js'
import { loadConfig } from '../../src/config/load.js'
import { compileMatch } from '../../src/core/router.js'
import { issueLine } from '../../src/config/report.js'
import '../../src/index.js'

const ROUTE = 'routes:\n  - match: { prefix: / }\n    protocol: http\n    backends: [127.0.0.1:9]\n'
const noStack = /Error:|\n\s+at /

function tmp (t: Test): string {
  const dir = mkdtempSync(join(tmpdir(), 'pc-cfgwalk-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

/** Exactly one issue, matching `want`. */
function one (t: Test, issues: string[], want: RegExp, name?: string): void {
  t.equal(issues.length, 1, `${name ?? ''} one issue: ${issues.join(' | ')}`)
  t.match(issues[0] ?? '', want, name ?? 'the issue')
}

/** Write `body` as `name` in `dir`; the issues of loading it, as `check` prints them (without the dir). */
async function issuesOf (dir: string, name: string, body: string, env: NodeJS.ProcessEnv = {}): Promise<string[]> {
  const file = join(dir, name)
  writeFileSync(file, body)
  const r = await loadConfig(file, { env })
  return r.issues.map((i) => issueLine(i).replaceAll(`${dir}/`, ''))
}

t.test('check: every problem in one run, each at its path and file:line:col, exit 2; a valid file: ok, exit 0', async (t) => {
  guardLeaks(t)
  const dir = tmp(t)
  const file = join(dir, 'multi.yaml')
  writeFileSync(file, [
    'listen: 127.0.0.1:0',
    'drainTimout: 5s',
    'routes:',
    '  - match: { prefix: /a/ }',
    '    protocol: http',
    '    backends: [127.0.0.1:9]',
    "  - match: { regex: '^/(x' }",
    '    protocol: http',
    '    backends: [127.0.0.1:9]',
    "  - match: { glob: 5, host: 'example.com:80' }",
    '    protocol: http',
    '    backends: [127.0.0.1:9]',
    '  - match: { extension: 7 }',
    '    protocol: htp',
    '    backends: [127.0.0.1:9]',
    '',
  ].join('\n'))
  const r = await runCli(['check', file])
  t.equal(r.code, 2)
  t.equal(r.stdout, '', 'the problems go to stderr')
  const lines = r.stderr.replaceAll(`${dir}/`, '').trim().split('\n')
  t.same(lines.map((l) => /^multi\.yaml:(\d+:\d+): (\S+): /.exec(l)?.slice(1, 3).join(' ')).slice(0, -1).sort(), [
    '10:20 /routes/2/match/glob',
    '10:29 /routes/2/match/host',
    '13:25 /routes/3/match/extension',
    '14:15 /routes/3/protocol',
    '2:1 /drainTimout',
    '7:21 /routes/1/match/regex',
  ], 'schema issues, compile issues (regex, host, protocol) and the unknown key, each once, in one run')
  t.match(r.stderr, /\/drainTimout: unknown key "drainTimout" \(did you mean "drainTimeout"\?\)/)
  t.match(lines[lines.length - 1], /^multi\.yaml: 6 problem\(s\)$/)
  t.notMatch(r.stderr, noStack)

  writeFileSync(join(dir, 'ok.yaml'), ROUTE)
  const ok = await runCli(['check', join(dir, 'ok.yaml')])
  t.equal(ok.code, 0)
  t.match(ok.stdout, /ok\.yaml: ok \(1 route\(s\), 0 spawn\(s\), 1 file\(s\)\)/, 'ok on stdout')
})

t.test('YAML anchors, aliases and merge keys work under known keys; an anchor-only top-level key is an unknown key', async (t) => {
  guardLeaks(t)
  const dir = tmp(t)
  const file = join(dir, 'merge.yaml')
  writeFileSync(file, [
    'routes:',
    '  - &api',
    '    name: api',
    '    match: { prefix: /api/ }',
    '    protocol: http',
    '    backends: &be [127.0.0.1:9]',
    '    timeouts: { headers: 5s }',
    '  - <<: *api',
    '    name: rest',
    '    match: { prefix: / }',
    '    backends: *be',
    '',
  ].join('\n'))
  const r = await loadConfig(file, { env: {} })
  t.same(r.issues, [])
  t.same(r.config.routes.map((x) => [x.name, x.protocol, x.backends, x.match?.prefix, x.timeouts?.headers]), [
    ['api', 'http', ['127.0.0.1:9'], '/api/', '5s'],
    ['rest', 'http', ['127.0.0.1:9'], '/', '5s'],
  ], 'the merged route has the anchor\'s fields, its own keys win')
  // docker-compose's `x-` extension keys do not exist here: every top-level key is checked.
  one(t, await issuesOf(dir, 'x.yaml', `x-base: &b { protocol: http, backends: [127.0.0.1:9] }\nroutes:\n  - <<: *b\n    match: { prefix: / }\n`),
    /^x\.yaml:1:1: \/x-base: unknown key "x-base"/)
})

t.test('duplicate keys are refused (YAML and JSON), at their line', async (t) => {
  guardLeaks(t)
  const dir = tmp(t)
  // Alone: the unknown key next to it is not checked once the file is not readable.
  one(t, await issuesOf(dir, 'dup.yaml', `${ROUTE}logLevel: info\nlogLevel: debug\ndrainTimout: 5s\n`), /^dup\.yaml:6:1: \/: syntax: Map keys must be unique$/)
  one(t, await issuesOf(dir, 'dup.json', '{"routes": [], "drainTimeout": "5s", "drainTimeout": "6s"}'), /^dup\.json:1:\d+: \/: syntax: Map keys must be unique$/)
})

t.test('YAML tags that would make something other than plain data are refused at their path, not read as a string', async (t) => {
  guardLeaks(t)
  const dir = tmp(t)
  const cases: Array<[string, string, RegExp]> = [
    ['js.yaml', `${ROUTE}serverName: !!js/function "function () {}"\n`, /^js\.yaml:5:13: \/serverName: syntax: unknown YAML tag !!js\/function/],
    ['local.yaml', `${ROUTE}serverName: !env HOST\n`, /^local\.yaml:5:13: \/serverName: syntax: unknown YAML tag !env/],
    ['binary.yaml', `${ROUTE}serverName: !!binary aGVsbG8=\n`, /^binary\.yaml:5:13: \/serverName: syntax: unknown YAML tag !!binary/],
    ['date.yaml', `${ROUTE}drainTimeout: !!timestamp 2001-12-14\n`, /^date\.yaml:5:15: \/drainTimeout: syntax: unknown YAML tag !!timestamp/],
    ['set.yaml', 'routes:\n  - match: { prefix: / }\n    protocol: http\n    backends: !!set { 127.0.0.1:9 }\n', /^set\.yaml:4:15: \/routes\/0\/backends: syntax: unknown YAML tag !!set/],
    ['seq.yaml', 'routes:\n  - match: { prefix: / }\n    protocol: http\n    backends: [127.0.0.1:9, !x 127.0.0.1:10]\n', /^seq\.yaml:4:29: \/routes\/0\/backends\/1: syntax: unknown YAML tag !x/],
  ]
  for (const [name, body, want] of cases) one(t, await issuesOf(dir, name, body), want, name)
  // The core schema's own tags stay: `!!str 5` is the string "5".
  const file = join(dir, 'core.yaml')
  writeFileSync(file, `${ROUTE}serverName: !!str 5\ndrainTimeout: !!int "5000"\n`)
  const r = await loadConfig(file, { env: {} })
  t.same(r.issues, [])
  t.equal(r.config.serverName, '5')
  t.equal(r.config.drainTimeout, 5000)
  const cli = await runCli(['check', join(dir, 'js.yaml')])
  t.equal(cli.code, 2)
  t.notMatch(cli.stderr, noStack)
})

t.test('a .json file is strict JSON: comments and trailing commas are refused at their line, never read as values', async (t) => {
  guardLeaks(t)
  const dir = tmp(t)
  const route = '{"match": {"prefix": "/"}, "protocol": "http", "backends": ["127.0.0.1:9"]}'
  const cases: Array<[string, string, RegExp]> = [
    // Read as YAML, the commented-out backend was a second backend named `// "127.0.0.1:8"`.
    ['commented-out.json', `{\n  "routes": [{"match": {"prefix": "/"}, "protocol": "http", "backends": [\n    // "127.0.0.1:8",\n    "127.0.0.1:9"]}]\n}\n`, /^commented-out\.json:3:5: \/: syntax: not valid JSON/],
    ['line-comment.json', `{\n  "serverName": "a", // the name\n  "routes": [${route}]\n}\n`, /^line-comment\.json:2:22: \/: syntax: not valid JSON/],
    ['block-comment.json', `{\n  /* c */ "routes": [${route}]\n}\n`, /^block-comment\.json:2:3: \/: syntax: not valid JSON/],
    ['hash.json', `{\n  "routes": [${route}], # c\n  "serverName": "a"\n}\n`, /^hash\.json:2:\d+: \/: syntax: not valid JSON/],
    ['trailing.json', `{"routes": [${route}],}\n`, /^trailing\.json:1:\d+: \/: syntax: not valid JSON/],
    ['after.json', `{"routes": [${route}]}\n}\n`, /^after\.json:2:1: \/: syntax: not valid JSON: Unexpected non-whitespace character \(/],
    ['single-quotes.json', `{'routes': []}\n`, /^single-quotes\.json:1:2: \/: syntax: not valid JSON/],
  ]
  for (const [name, body, want] of cases) one(t, await issuesOf(dir, name, body), want, name)
  const r = await runCli(['check', join(dir, 'commented-out.json')])
  t.equal(r.code, 2)
  t.notMatch(r.stderr, noStack)
  // JSON with a byte order mark (as some Windows editors save it), and duplicate keys still refused.
  t.same(await issuesOf(dir, 'bom.json', `\ufeff{"routes": [${route}]}\n`), [])
  // The same text is fine YAML, where `#` starts a comment: only the .json name makes it strict.
  t.same(await issuesOf(dir, 'hash.yaml', `{\n  "routes": [${route}], # c\n  "serverName": "a"\n}\n`), [])
})

t.test('durations and sizes: the forms the page names, numbers or strings; anything else at its path', async (t) => {
  guardLeaks(t)
  const dir = tmp(t)
  const durations: Array<[string, boolean]> = [
    ['5000', true], ['"5000"', true], ['250ms', true], ['60s', true], ['5m', true], ['1h', true], ['1d', true], ['1.5s', true], ['"5 s"', true], ['1e3', true],
    ['5S', false], ['1h30m', false], ['-1', false], ['.5s', false], ['"1e3"', false], ['5sec', false],
  ]
  for (const [v, ok] of durations) {
    const got = await issuesOf(dir, 'd.yaml', `${ROUTE}drainTimeout: ${v}\n`)
    if (ok) t.same(got, [], `drainTimeout: ${v} is a duration`)
    else one(t, got, /^d\.yaml:5:15: \/drainTimeout: invalid value \(found .*; expected a duration like "60s", or milliseconds\)$/, `drainTimeout: ${v} is refused`)
  }
  const sizes: Array<[string, boolean]> = [
    ['1024', true], ['"1024"', true], ['256MiB', true], ['64kib', true], ['1.5KiB', true], ['"10 MB"', true], ['1g', true],
    ['64Ki', false], ['1P', false], ['-5', false], ['1GiBs', false],
  ]
  for (const [v, ok] of sizes) {
    const got = await issuesOf(dir, 's.yaml', `${ROUTE}maxResponseHeadSize: ${v}\n`)
    if (ok) t.same(got, [], `maxResponseHeadSize: ${v} is a size`)
    else one(t, got, /^s\.yaml:5:22: \/maxResponseHeadSize: invalid value \(found .*; expected a size like "256MiB", or bytes\)$/, `maxResponseHeadSize: ${v} is refused`)
  }
})

t.test('${VAR}: substituted in strings, unset is an error at its path, the result is always a string', async (t) => {
  guardLeaks(t)
  const dir = tmp(t)
  const file = join(dir, 'env.yaml')
  writeFileSync(file, [
    'listen: ${LISTEN}',
    'serverName: "$${HOST}"',
    'drainTimeout: ${DRAIN:-10s}',
    'routes:',
    '  - match: { prefix: "${PREFIX:-/}" }',
    '    protocol: http',
    '    backends: ["127.0.0.1:${PORT}"]',
    '',
  ].join('\n'))
  const r = await loadConfig(file, { env: { LISTEN: '127.0.0.1:0', HOST: 'h', PORT: '9', PREFIX: '' } })
  t.same(r.issues, [])
  t.equal(r.config.listen, '127.0.0.1:0')
  t.equal(r.config.serverName, '${HOST}', '$${ is a literal ${')
  t.equal(r.config.drainTimeout, '10s', 'the default when unset')
  t.equal(r.config.routes[0].match?.prefix, '/', 'the default when set but empty (as the shell\'s :-)')
  t.same(r.config.routes[0].backends, ['127.0.0.1:9'])
  const unset = await loadConfig(file, { env: { LISTEN: '127.0.0.1:0' } })
  t.same(unset.issues.map((i) => issueLine(i).replaceAll(`${dir}/`, '')), [
    'env.yaml:7:16: /routes/0/backends/0: environment variable PORT is not set (write ${PORT:-default} for a fallback) (found "${PORT}"; expected PORT in the environment)',
  ])
  // An integer or boolean field cannot come from a variable: the substituted value is a string.
  one(t, await issuesOf(dir, 'int.yaml', 'routes:\n  - match: { prefix: / }\n    protocol: http\n    backends: [127.0.0.1:9]\n    maxConcurrent: ${N}\n', { N: '10' }),
    /^int\.yaml:5:20: \/routes\/0\/maxConcurrent: expected integer \(found "10"; expected an integer >= 0\)$/)
  // Unquoted inside a flow mapping, `{` of `${T}` starts a mapping: a YAML syntax error; quoted, it works.
  const flow = await issuesOf(dir, 'flow.yaml', `${ROUTE}    timeouts: { headers: \${T} }\n`, { T: '5s' })
  t.ok(flow.length > 0 && flow.every((l) => /^flow\.yaml:5:\d+: \/: syntax: /.test(l)), flow.join(' | '))
  t.same(await issuesOf(dir, 'quoted.yaml', `${ROUTE}    timeouts: { headers: "\${T}" }\n`, { T: '5s' }), [])
})

t.test('the Top level table and the Spawns list name every key the schema has there', async (t) => {
  guardLeaks(t)
  const doc = readFileSync(join(root, 'docs/reference/config.md'), 'utf8')
  const schema = JSON.parse(readFileSync(join(root, 'schema/proxycore.schema.json'), 'utf8')) as { properties: Record<string, { patternProperties?: Record<string, { properties: Record<string, unknown> }> }> }
  const section = (title: string): string => doc.slice(doc.indexOf(`## ${title}\n`), doc.indexOf('\n## ', doc.indexOf(`## ${title}\n`) + 1))
  const topRows = section('Top level').split('\n').filter((l) => l.startsWith('| `')).map((l) => l.split(' | ')[0])
  const inTable = new Set(topRows.flatMap((cell) => [...cell.matchAll(/`([^`]+)`/g)].map((m) => m[1])))
  t.same(Object.keys(schema.properties).filter((k) => !inTable.has(k)), [], 'every top-level key has a row')
  const spawnKeys = Object.keys(Object.values(schema.properties.spawns.patternProperties ?? {})[0].properties)
  const spawns = section('Spawns')
  t.same(spawnKeys.filter((k) => !spawns.includes(`\`${k}\``) && !spawns.includes(`\`${k}{}\``)), [], 'every spawn key is listed')
})

t.test('Route matching table: the claims test/unit/core-units.test.ts does not make', async (t) => {
  guardLeaks(t)
  const m = (match: object, path: string, method = 'GET'): boolean => compileMatch(match)({ host: 'h', path, method })
  t.ok(m({ prefix: '/api' }, '/apix'), '`/api` (no slash) also matches `/apix`')
  t.notOk(m({ prefix: '/api/' }, '/API/x'), 'prefix is case-sensitive')
  t.ok(m({ extension: '.php' }, '/A.PHP'), 'extension is case-insensitive')
  t.ok(m({ glob: '/static/**/*.css' }, '/static/.cache/.x.css'), 'glob: dot files included')
  t.ok(m({ methods: ['get'] }, '/', 'GET'), 'methods in any case')
})

t.test('serve + SIGHUP: a .json rewritten with a comment is a rejected reload at its line; the old config keeps serving', async (t) => {
  guardLeaks(t)
  const dir = tmp(t)
  const file = join(dir, 'proxycore.json')
  const config = { listen: '127.0.0.1:0', status: { path: '/server-status' }, routes: [] as unknown[] }
  writeFileSync(file, JSON.stringify(config, null, 2))
  const s = await serve(file)
  killAtTeardown(t, s, () => [])
  t.equal((await getText(`${s.url}/server-status?format=json`)).status, 200)
  writeFileSync(file, JSON.stringify(config, null, 2).replace('"routes": []', '"routes": [] // none yet'))
  const mark = s.logs().length
  s.child.kill('SIGHUP')
  const rejected = await s.waitLog('reload rejected; the previous config keeps serving', mark)
  t.match(rejected, { issues: [{ path: '', message: /^syntax: not valid JSON: /, source: /proxycore\.json:\d+:\d+$/ }] })
  t.equal((await getText(`${s.url}/server-status?format=json`)).status, 200, 'the old config still serves')
  s.child.kill('SIGTERM')
  t.equal(await s.exited, 0)
})
