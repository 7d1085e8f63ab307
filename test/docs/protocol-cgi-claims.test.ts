/**
 * docs/protocols/cgi.md, its claims checked against real /bin/sh and perl scripts through the whole
 * pipeline (createProxy → cgi adapter → SpawnManager pipe spawn): the "What runs" table, where the
 * process's environment comes from and in which order, the RFC 3875 variables as a perl script
 * sees them (what is stripped), a script that never reads its body on a keep-alive connection, a
 * script file without a #! line, and the options table against the code's defaults. What
 * test/cgi/pipes.test.ts already checks (the sh script's meta-variables, head errors, exit
 * conditions, timeouts, NPH) is not repeated here.
 */
import t from 'tap'
import { randomBytes } from 'node:crypto'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { Agent, request } from 'node:http'
import { dirname, join, resolve } from 'node:path'
import { parse } from 'yaml'
import { guardLeaks } from '../helpers/leaks.js'
import { get } from '../helpers/servers.js'
import { cgiProxy, havePeer, parseEnv, tempDir, writeScripts } from '../cgi/harness.js'
import { CGI_DEFAULTS, parseCgiOptions } from '../../src/protocols/cgi/options.js'
import { ConfigError } from '../../src/core/errors.js'
import { root } from '../cli/run.js'
import { loadConfig } from '../../src/index.js'

const DOC = readFileSync(join(root, 'docs/protocols/cgi.md'), 'utf8')
/** The document's prose with its line breaks and indentation folded to single spaces. */
const PROSE = DOC.replace(/\s+/g, ' ')
const PERL = '/usr/bin/perl'
const HEAD = "printf 'Content-Type: text/plain\\n\\n'"

t.test('the options table is the code\'s defaults', async (t) => {
  const row = (name: string): string => {
    const m = new RegExp('^\\| `' + name + '` \\| `([^`]+)` \\|', 'm').exec(DOC)
    if (m === null) throw new Error(`cgi.md has no options row for ${name}`)
    return m[1]
  }
  t.same({ nph: row('nph') === 'true', maxStderr: Number(row('maxStderr')), linger: Number(row('linger')) }, CGI_DEFAULTS)
  t.same(parseCgiOptions(undefined, '/routes/0/options'), CGI_DEFAULTS)
  t.throws(() => parseCgiOptions({ lingr: 1 }, '/routes/0/options'), ConfigError, 'an unknown option is a config error')
})

t.test('"What runs": a docroot-less route runs binPath alone (SCRIPT_FILENAME empty); scriptFilename runs after binPath in its own directory', async (t) => {
  guardLeaks(t)
  const dir = tempDir(t, 'pc-doc-cgiproto-')
  const show = `#!/bin/sh\n${HEAD}\nprintf 'argv0=%s argc=%s pwd=%s\\n' "$0" "$#" "$(pwd)"\nenv\n`
  writeScripts(join(dir, 'bin'), { 'prog.sh': show })
  writeScripts(join(dir, 'one'), { 'entry.sh': show }, 0o644)
  const p = await cgiProxy(t, {
    prog: { binPath: join(dir, 'bin', 'prog.sh') },
    sh: { binPath: '/bin/sh' },
  }, [
    { match: { prefix: '/app/' }, protocol: 'cgi', spawn: 'prog' },
    { match: { prefix: '/one/' }, protocol: 'cgi', spawn: 'sh', scriptFilename: join(dir, 'one', 'entry.sh') },
  ])
  const neither = (await get(`${p.url}/app/x/y?z=1`)).body.toString()
  t.match(neither, `argv0=${join(dir, 'bin', 'prog.sh')} argc=0 pwd=${join(dir, 'bin')}\n`, 'binPath alone, in the spawn\'s cwd (through the API: the program\'s directory)')
  const e1 = parseEnv(neither)
  t.same([e1.SCRIPT_FILENAME, e1.SCRIPT_NAME, e1.PATH_INFO, e1.QUERY_STRING], ['', '/app', '/x/y', 'z=1'], 'SCRIPT_FILENAME empty, SCRIPT_NAME the prefix, PATH_INFO the rest')
  t.ok('SCRIPT_FILENAME' in e1, 'SCRIPT_FILENAME is set, to the empty string')

  const fixed = (await get(`${p.url}/one/a`)).body.toString()
  t.match(fixed, `argv0=${join(dir, 'one', 'entry.sh')} argc=0 pwd=${join(dir, 'one')}\n`, '[...binPath, scriptFilename], in its directory (a file without execute bit: run by the interpreter)')
  const e2 = parseEnv(fixed)
  t.same([e2.SCRIPT_FILENAME, e2.SCRIPT_NAME, e2.PATH_INFO], [join(dir, 'one', 'entry.sh'), '/one', '/a'])
})

t.test('the environment: copyEnvironment + environment, then the request\'s meta-variables, then params; never the client\'s HTTP_PROXY', async (t) => {
  guardLeaks(t)
  const dir = tempDir(t, 'pc-doc-cgiproto-')
  writeScripts(dir, { 'env.sh': `#!/bin/sh\n${HEAD}\nenv\n` })
  const p = await cgiProxy(t, {
    cgi: { environment: { FROM_SPAWN: 'spawn', BOTH: 'spawn', SERVER_NAME: 'spawn.example', HTTP_X_A: 'spawn' } },
  }, [{ match: { prefix: '/' }, protocol: 'cgi', spawn: 'cgi', docroot: dir, params: { BOTH: 'param', HTTP_PROXY: 'http://param.example:3128' } }])
  const env = parseEnv((await get(`${p.url}/env.sh`, { headers: { host: 'h.example', 'x-a': 'request', proxy: 'http://client.example:3128' } })).body.toString())
  t.equal(env.FROM_SPAWN, 'spawn', 'the spawn\'s environment')
  t.equal(env.SERVER_NAME, 'h.example', 'the request wins on a clash')
  t.equal(env.HTTP_X_A, 'spawn', 'a header never replaces the spawn\'s variable of the same name')
  t.equal(env.BOTH, 'param', 'the route\'s params come last')
  t.notOk('HTTP_PROXY' in env, 'httpoxy: neither the client\'s Proxy header nor a param becomes HTTP_PROXY')
  const withSpawnProxy = await cgiProxy(t, { cgi: { environment: { HTTP_PROXY: 'http://operator.example:3128' } } },
    [{ match: { prefix: '/' }, protocol: 'cgi', spawn: 'cgi', docroot: dir }])
  const operator = parseEnv((await get(`${withSpawnProxy.url}/env.sh`, { headers: { proxy: 'http://client.example:3128' } })).body.toString())
  t.equal(operator.HTTP_PROXY, 'http://operator.example:3128', 'a spawn\'s own environment is passed as the operator wrote it, HTTP_PROXY too; the client\'s never replaces it')
  const without = parseEnv((await get(`${p.url}/env.sh`)).body.toString())
  t.equal(without.HTTP_X_A, 'spawn', 'without the header, the spawn\'s variable too')
  t.match(PROSE, 'only the spawn\'s own `environment` or `copyEnvironment` can', 'cgi.md says where an HTTP_PROXY can come from')
  t.match(PROSE, '`HTTP_X_A`) is never replaced by the request\'s header', 'cgi.md says a header never replaces a spawn variable')
  t.match(PROSE, '`PROXYCORE_SPAWN=<spawn name>`', 'cgi.md names the marker')
})

t.test('RFC 3875 variables as a perl script sees them: what is passed, joined and stripped', async (t) => {
  guardLeaks(t)
  if (!havePeer(t, PERL)) return
  const dir = tempDir(t, 'pc-doc-cgiproto-')
  writeScripts(dir, {
    'env.pl': 'my $n = read(STDIN, my $body, 1 << 20) // 0;\nprint "Content-Type: text/plain\\n\\n";\nprint "$_=$ENV{$_}\\n" for sort keys %ENV;\nprint "BODY=$body\\n";\n',
  }, 0o644)
  const p = await cgiProxy(t, { perl: { binPath: [PERL, '-wT'] } }, [
    { match: { prefix: '/perl/' }, protocol: 'cgi', spawn: 'perl', docroot: dir, stripPrefix: true },
  ])
  const r = await get(`${p.url}/perl/env.pl/p%20i/?a=1&b=%2F`, {
    method: 'POST',
    body: 'abc',
    headers: {
      'content-type': 'text/x-test', proxy: 'http://client.example:3128', x_under: 'dropped', 'x-dup': ['a', 'b'], cookie: ['c=1', 'd=2'],
      authorization: 'Basic Zm9vOmJhcg==', connection: 'keep-alive, x-hop', 'x-hop': 'hop', 'accept-language': 'fr',
    },
  })
  t.equal(r.status, 200)
  const env = parseEnv(r.body.toString())
  t.match(env, {
    REQUEST_METHOD: 'POST', SCRIPT_NAME: '/perl/env.pl', SCRIPT_FILENAME: join(dir, 'env.pl'), PATH_INFO: '/p i/', QUERY_STRING: 'a=1&b=%2F',
    CONTENT_LENGTH: '3', CONTENT_TYPE: 'text/x-test', HTTP_X_DUP: 'a, b', HTTP_COOKIE: 'c=1; d=2', HTTP_ACCEPT_LANGUAGE: 'fr', BODY: 'abc',
    REQUEST_URI: '/perl/env.pl/p%20i/?a=1&b=%2F', DOCUMENT_ROOT: dir,
  })
  for (const name of ['HTTP_PROXY', 'HTTP_X_UNDER', 'HTTP_AUTHORIZATION', 'HTTP_X_HOP', 'HTTP_CONNECTION', 'HTTP_CONTENT_LENGTH', 'HTTP_CONTENT_TYPE', 'PATH_TRANSLATED']) {
    t.notOk(name in env, `no ${name}`)
  }
})

t.test('a script that never reads its body: the response stands and the keep-alive connection goes on', async (t) => {
  guardLeaks(t)
  const dir = tempDir(t, 'pc-doc-cgiproto-')
  writeScripts(dir, { 'noread.sh': `#!/bin/sh\n${HEAD}\nprintf 'len=%s' "$CONTENT_LENGTH"\n`, 'env.sh': `#!/bin/sh\n${HEAD}\nprintf 'second'\n` })
  for (const requestBuffering of [true, false]) {
    const p = await cgiProxy(t, { cgi: {} }, [{ match: { prefix: '/' }, protocol: 'cgi', spawn: 'cgi', docroot: dir, requestBuffering }])
    const agent = new Agent({ keepAlive: true, maxSockets: 1 })
    t.teardown(() => agent.destroy())
    // The client's port tells the connection (req.reusedSocket is false for a request that waited
    // in the agent's queue for the socket the previous upload was still writing on).
    const one = (path: string, body?: Buffer): Promise<{ status: number, text: string, port: number }> => new Promise((resolve, reject) => {
      const req = request(`${p.url}${path}`, { method: body === undefined ? 'GET' : 'POST', agent }, (res) => {
        let text = ''
        res.on('data', (c: Buffer) => { text += c.toString() })
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text, port: req.socket?.localPort ?? -1 }))
      })
      req.on('error', reject)
      req.end(body)
    })
    const size = 4 * 1024 * 1024
    const first = await one('/noread.sh', randomBytes(size))
    t.same([first.status, first.text], [200, `len=${size}`], `requestBuffering ${requestBuffering}: 4 MiB posted, not read: 200`)
    const second = await one('/env.sh')
    t.same([second.status, second.text, second.port], [200, 'second', first.port], `requestBuffering ${requestBuffering}: the next request on the same connection is answered`)
  }
})

t.test('a script file without a #! line is run by /bin/sh, as execvp(3) and Node\'s spawn() do', async (t) => {
  guardLeaks(t)
  const dir = tempDir(t, 'pc-doc-cgiproto-')
  writeScripts(dir, { 'noshebang.cgi': `${HEAD}\nprintf 'ran by %s' "$(readlink /proc/$$/exe)"\n` })
  for (const launcher of ['fork-server', 'direct'] as const) {
    const p = await cgiProxy(t, { cgi: { launcher } }, [{ match: { prefix: '/' }, protocol: 'cgi', spawn: 'cgi', docroot: dir }])
    const r = await get(`${p.url}/noshebang.cgi`)
    t.equal(r.status, 200, `${launcher}: answered`)
    t.match(r.body.toString(), /^ran by \/(usr\/)?bin\/(dash|bash|sh)$/, `${launcher}: by /bin/sh`)
  }
  t.match(PROSE, 'A file without a `#!` line is run by `/bin/sh`', 'cgi.md says so')
  t.notMatch(PROSE, /ENOEXEC\) \| `ERR_CGI_SPAWN`/, 'and no longer lists ENOEXEC as an ERR_CGI_SPAWN case')
})

t.test('both documents: every yaml block parses, complete configs validate, the files they name exist', async (t) => {
  guardLeaks(t)
  const dir = tempDir(t, 'pc-doc-cgiproto-')
  let configs = 0
  for (const doc of ['docs/protocols/cgi.md', 'docs/guides/cgi-and-git.md']) {
    const text = readFileSync(join(root, doc), 'utf8')
    for (const [i, m] of [...text.matchAll(/^```yaml\n([\s\S]*?)^```/gm)].entries()) {
      let value: unknown
      t.doesNotThrow(() => { value = parse(m[1]) }, `${doc} yaml block ${i} parses`)
      if (typeof value !== 'object' || value === null || !('routes' in value)) continue
      const file = join(dir, `block-${configs++}.yaml`)
      writeFileSync(file, m[1])
      const r = await loadConfig(file, { env: {} })
      t.same(r.issues.map((x) => `${x.path}: ${x.message}`), [], `${doc} yaml block ${i} is a valid config`)
    }
    const named = [...text.matchAll(/\]\(([^)#\s]+)(#[^)]*)?\)/g)].map((x) => resolve(dirname(join(root, doc)), x[1])).filter((p) => !/^[a-z]+:/.test(p))
    for (const x of text.matchAll(/`((?:test|examples|native|src)\/[\w./-]+\.(?:ts|c))`/g)) named.push(join(root, x[1]))
    t.same(named.filter((p) => !existsSync(p)), [], `${doc}: every linked or named file exists`)
  }
  t.equal(configs, 5, 'the five complete configs (cgi.md, guide sections 1-4)')
})
