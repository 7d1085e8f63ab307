/**
 * docs/guides/cgi-and-git.md, "Pushes", with the real git client against `git http-backend` through
 * a CGI route: git http-backend serves git-receive-pack only when REMOTE_USER is set or the
 * repository sets `http.receivepack true`. A route's `params.REMOTE_USER` counts as authenticated
 * (the push lands without http.receivepack); with neither the push is refused with 403; with only
 * `http.receivepack true` it lands.
 * Then section 4 as a new user runs it (the yaml through `proxycore serve`, the sh block through
 * /bin/sh), shallow fetches and protocol v2, a chunked push over spoolLimit (413), and a clone
 * whose requests git gzips (3000 wants).
 */
import t from 'tap'
import { execFile } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { guardLeaks } from '../helpers/leaks.js'
import { get } from '../helpers/servers.js'
import { cgiProxy, havePeer, tempDir } from '../cgi/harness.js'
import { killAtTeardown, root, serve } from '../cli/run.js'
import { guideBlocks, must } from './snippets.js'

const execFileP = promisify(execFile)
const GIT = '/usr/bin/git'
const HTTP_BACKEND = '/usr/lib/git-core/git-http-backend'
const block = guideBlocks(join(root, 'docs/guides/cgi-and-git.md'))

type Tap = Parameters<typeof tempDir>[0]

function gitIn (home: string) {
  // The git client's environment from scratch: no proxy variables, no user or system config.
  const env = { PATH: process.env.PATH ?? '', HOME: home, GIT_CONFIG_NOSYSTEM: '1', GIT_TERMINAL_PROMPT: '0', NO_PROXY: '*' }
  return async (cwd: string, ...args: string[]): Promise<string> =>
    (await execFileP(GIT, ['-c', 'user.name=T', '-c', 'user.email=t@example.invalid', '-c', 'init.defaultBranch=main', ...args], { cwd, env })).stdout.trim()
}

/** A temp dir with repos/ (GIT_PROJECT_ROOT), a HOME for git, and a source repo committing `file`. */
async function workspace (t: Tap, prefix: string, file: string, content: string | Buffer) {
  const dir = tempDir(t, prefix)
  const repos = join(dir, 'repos')
  const home = join(dir, 'home')
  const source = join(dir, 'source')
  mkdirSync(repos)
  mkdirSync(home)
  const git = gitIn(home)
  await git(dir, 'init', '-q', source)
  writeFileSync(join(source, file), content)
  await git(source, 'add', file)
  await git(source, 'commit', '-qm', 'init')
  return { dir, repos, source, git }
}

/** A proxy with the guide's git route (params.REMOTE_USER optional), a bare repo and a source repo with one commit. */
async function setup (t: Tap, opts: { remoteUser: boolean, receivepack: boolean }) {
  const { dir, repos, source, git } = await workspace(t, 'pc-doc-git-', 'README', 'hi\n')
  const bare = join(repos, 'demo.git')
  await git(dir, 'init', '-q', '--bare', bare)
  if (opts.receivepack) await git(bare, 'config', 'http.receivepack', 'true')
  const p = await cgiProxy(t, {
    git: { binPath: HTTP_BACKEND, environment: { GIT_PROJECT_ROOT: repos, GIT_HTTP_EXPORT_ALL: '1' }, stopTimeout: 2000 }
  }, [{
    match: { prefix: '/git/' },
    protocol: 'cgi',
    spawn: 'git',
    ...(opts.remoteUser ? { params: { REMOTE_USER: 'git' } } : {}),
  }])
  const remote = `${p.url}/git/demo.git`
  const push = async (): Promise<{ ok: boolean, stderr: string }> => {
    try {
      await git(source, 'push', '-q', remote, 'HEAD:refs/heads/main')
      return { ok: true, stderr: '' }
    } catch (err) {
      return { ok: false, stderr: String((err as { stderr?: string }).stderr ?? err) }
    }
  }
  const remoteHead = async (): Promise<string | null> => {
    try { return await git(bare, 'rev-parse', '--verify', '-q', 'refs/heads/main') } catch { return null }
  }
  return { remote, push, remoteHead, head: await git(source, 'rev-parse', 'HEAD'), url: p.url }
}

t.test('params.REMOTE_USER without http.receivepack: the push lands', async (t) => {
  guardLeaks(t)
  if (!havePeer(t, GIT) || !havePeer(t, HTTP_BACKEND)) return
  const s = await setup(t, { remoteUser: true, receivepack: false })
  const r = await s.push()
  t.ok(r.ok, `git push succeeded ${r.stderr}`)
  t.equal(await s.remoteHead(), s.head, 'the pushed commit is the remote ref')
})

// AC-96
t.test('neither REMOTE_USER nor http.receivepack: the push is refused with 403', async (t) => {
  guardLeaks(t)
  if (!havePeer(t, GIT) || !havePeer(t, HTTP_BACKEND)) return
  const s = await setup(t, { remoteUser: false, receivepack: false })
  const adv = await get(`${s.remote}/info/refs?service=git-receive-pack`)
  t.equal(adv.status, 403, 'git http-backend answers the receive-pack advertisement 403')
  const r = await s.push()
  t.notOk(r.ok, 'git push failed')
  t.match(r.stderr, /403/, 'the client saw the 403')
  t.equal(await s.remoteHead(), null, 'nothing landed')
  const clone = await get(`${s.remote}/info/refs?service=git-upload-pack`)
  t.equal(clone.status, 200, 'reading (upload-pack) is still served')
})

t.test('only http.receivepack true: the push lands', async (t) => {
  guardLeaks(t)
  if (!havePeer(t, GIT) || !havePeer(t, HTTP_BACKEND)) return
  const s = await setup(t, { remoteUser: false, receivepack: true })
  const r = await s.push()
  t.ok(r.ok, `git push succeeded ${r.stderr}`)
  t.equal(await s.remoteHead(), s.head, 'the pushed commit is the remote ref')
})

/**
 * Section 4 as a new user runs it: the guide's yaml block (only `listen` added, port 0, and
 * /srv/git moved to a temp dir) served by `proxycore serve`, then the guide's sh block run by
 * /bin/sh as written (paths and URL changed) with a fresh HOME configured as the guide asks. Then
 * what a user does next against the same server: a shallow clone, deepening it, unshallowing it,
 * and the protocol v2 the client asks for (Git-Protocol → HTTP_GIT_PROTOCOL).
 */
t.test('section 4 as written: proxycore serve, the guide\'s commands clone, commit and push; shallow fetches work', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  if (!havePeer(t, GIT) || !havePeer(t, HTTP_BACKEND)) return
  const dir = tempDir(t, 'pc-doc-git4-')
  const srv = join(dir, 'srv-git')
  const home = join(dir, 'home')
  const work = join(dir, 'work')
  for (const d of [srv, home, work]) mkdirSync(d)
  const yaml = 'listen: 127.0.0.1:0\n' + must(block('## 4. A git server', 'yaml'), 'GIT_PROJECT_ROOT: /srv/git', `GIT_PROJECT_ROOT: ${srv}`)
  const config = join(dir, 'proxycore.yaml')
  writeFileSync(config, yaml)
  const s = await serve(config)
  killAtTeardown(t, s, () => [])

  const env = { PATH: process.env.PATH ?? '', HOME: home, GIT_CONFIG_NOSYSTEM: '1', GIT_TERMINAL_PROMPT: '0', NO_PROXY: '*' }
  // "git config --global user.name … first on a fresh machine"
  await execFileP(GIT, ['config', '--global', 'user.name', 'T'], { env })
  await execFileP(GIT, ['config', '--global', 'user.email', 't@example.invalid'], { env })
  let sh = block('## 4. A git server', 'sh')
  sh = must(sh, /\/srv\/git/g, srv)
  sh = must(sh, /http:\/\/127\.0\.0\.1:8080/g, s.url)
  const out = await execFileP('/bin/sh', ['-ec', sh], { cwd: work, env }).catch((err: { stdout: string, stderr: string, message: string }) => {
    t.fail(`the guide's commands failed: ${err.message}`)
    return { stdout: err.stdout, stderr: err.stderr }
  })
  t.match(out.stderr, 'warning: You appear to have cloned an empty repository.', 'the clone prints the warning the guide shows')
  t.match(out.stderr, /\* \[new branch\]\s+HEAD -> master/, 'the push prints the line the guide shows')
  const git = async (cwd: string, ...args: string[]): Promise<{ stdout: string, stderr: string }> => await execFileP(GIT, args, { cwd, env })
  const bare = join(srv, 'demo.git')
  const demo = join(work, 'demo')
  t.equal((await git(bare, 'rev-parse', 'master')).stdout, (await git(demo, 'rev-parse', 'HEAD')).stdout, 'the commit landed in /srv/git/demo.git')

  // Two more commits, then a shallow clone and its deepening, all through the proxy.
  for (const n of [2, 3]) {
    writeFileSync(join(demo, 'README'), `hi ${n}\n`)
    await git(demo, 'commit', '-qam', `c${n}`)
  }
  await git(demo, 'push', '-q', 'origin', 'HEAD')
  const url = `${s.url}/git/demo.git`
  const shallow = join(work, 'shallow')
  const clone = await execFileP(GIT, ['clone', '--depth', '1', url, shallow], { cwd: work, env: { ...env, GIT_TRACE_PACKET: '1' } })
  t.match(clone.stderr, /git< version 2/, 'the client asked for protocol v2 (Git-Protocol header) and git http-backend answered in v2')
  const count = async (): Promise<string> => (await git(shallow, 'rev-list', '--count', 'HEAD')).stdout.trim()
  t.equal(await count(), '1', 'git clone --depth 1: one commit')
  t.equal((await git(shallow, 'rev-parse', '--is-shallow-repository')).stdout.trim(), 'true')
  await git(shallow, 'fetch', '-q', '--deepen=1')
  t.equal(await count(), '2', 'git fetch --deepen=1: two')
  await git(shallow, 'fetch', '-q', '--unshallow')
  t.equal(await count(), '3', 'git fetch --unshallow: the whole history')
  t.equal((await git(shallow, 'rev-parse', '--is-shallow-repository')).stdout.trim(), 'false')
  const v0 = await execFileP(GIT, ['-c', 'protocol.version=0', 'ls-remote', url], { cwd: work, env })
  t.match(v0.stdout, /\trefs\/heads\/master\n/, 'a protocol v0 client is served too')

  s.child.kill('SIGTERM')
  t.equal(await s.exited, 0, 'SIGTERM: proxycore exits 0')
})

t.test('"Large pushes": a chunked push over spoolLimit is refused with 413, and nothing lands', async (t) => {
  guardLeaks(t)
  if (!havePeer(t, GIT) || !havePeer(t, HTTP_BACKEND)) return
  // Random bytes: the pack cannot compress below spoolLimit.
  const { dir, repos, source, git } = await workspace(t, 'pc-doc-git413-', 'blob.bin', randomBytes(3 * 1024 * 1024))
  await git(dir, 'init', '-q', '--bare', join(repos, 'demo.git'))
  const p = await cgiProxy(t, {
    git: { binPath: HTTP_BACKEND, environment: { GIT_PROJECT_ROOT: repos, GIT_HTTP_EXPORT_ALL: '1' }, stopTimeout: 2000 }
  }, [{ match: { prefix: '/git/' }, protocol: 'cgi', spawn: 'git', spoolLimit: '1MiB', params: { REMOTE_USER: 'git' } }])
  const r = await git(source, '-c', 'http.postBuffer=65536', 'push', `${p.url}/git/demo.git`, 'HEAD:refs/heads/main')
    .then(() => ({ ok: true, stderr: '' }), (err: { stderr?: string }) => ({ ok: false, stderr: String(err.stderr) }))
  t.notOk(r.ok, 'the push fails')
  t.match(r.stderr, /413/, 'git reports the 413')
  t.ok(p.lines.some((l) => l.obj.code === 'ERR_BODY_TOO_LARGE'), 'logged as ERR_BODY_TOO_LARGE')
  const refs = await git(join(repos, 'demo.git'), 'for-each-ref').catch(() => 'error')
  t.equal(refs, '', 'nothing landed')
})

t.test('a clone that makes git gzip its request (3000 branches: 3000 wants), in protocol v0 and v2', async (t) => {
  guardLeaks(t)
  if (!havePeer(t, GIT) || !havePeer(t, HTTP_BACKEND)) return
  const dir = tempDir(t, 'pc-doc-gitgz-')
  const repos = join(dir, 'repos')
  const home = join(dir, 'home')
  mkdirSync(repos)
  mkdirSync(home)
  const env = { PATH: process.env.PATH ?? '', HOME: home, GIT_CONFIG_NOSYSTEM: '1', GIT_TERMINAL_PROMPT: '0', NO_PROXY: '*' }
  const bare = join(repos, 'many.git')
  await execFileP(GIT, ['init', '-q', '--bare', bare], { env })
  // 3000 commits in a chain, a branch on each: every one is a distinct want.
  const stream: string[] = []
  for (let i = 0; i < 3000; i++) {
    const msg = `c${i}`
    stream.push(`commit refs/heads/b${i}\nmark :${i + 1}\ncommitter T <t@example.invalid> 1 +0000\ndata ${msg.length}\n${msg}\n${i > 0 ? `from :${i}\n` : ''}`)
  }
  await new Promise<void>((resolve, reject) => {
    const child = execFile(GIT, ['fast-import', '--quiet'], { cwd: bare, env }, (err) => { if (err === null) resolve(); else reject(err) })
    child.stdin?.end(stream.join('\n') + '\n')
  })
  const p = await cgiProxy(t, {
    git: { binPath: HTTP_BACKEND, environment: { GIT_PROJECT_ROOT: repos, GIT_HTTP_EXPORT_ALL: '1' }, stopTimeout: 2000 }
  }, [{ match: { prefix: '/git/' }, protocol: 'cgi', spawn: 'git' }])
  for (const version of ['0', '2']) {
    const mirror = join(dir, `mirror-v${version}`)
    const r = await execFileP(GIT, ['-c', `protocol.version=${version}`, 'clone', '-q', '--mirror', `${p.url}/git/many.git`, mirror],
      { cwd: dir, env: { ...env, GIT_TRACE_CURL: '1', GIT_TRACE_CURL_NO_DATA: '1' }, maxBuffer: 256 * 1024 * 1024 })
    t.match(r.stderr, /Content-Encoding: gzip/i, `v${version}: git sent a gzip request body (HTTP_CONTENT_ENCODING for git http-backend)`)
    const refs = (await execFileP(GIT, ['for-each-ref'], { cwd: mirror, env, maxBuffer: 16 * 1024 * 1024 })).stdout.split('\n').filter((l) => l !== '')
    t.equal(refs.length, 3000, `v${version}: all 3000 branches cloned`)
  }
})
