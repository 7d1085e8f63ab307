/**
 * The real git client against `git http-backend` through a CGI route, with 32 MiB of
 * incompressible data each way: a clone (the pack streams out of the CGI's stdout to the client)
 * and a push with a 1 MiB http.postBuffer (git sends the pack chunked, the core spools it and
 * git http-backend reads exactly CONTENT_LENGTH bytes, RFC 3875 §4.2). Both must land intact
 * (same tree, git fsck clean). The proxy RSS growth is printed (1.5-43 MiB on Node 20-24): 32 MiB is
 * too small to prove a bound with; large-transfer.test.ts does that with 100-160 MiB.
 */
import t from 'tap'
import { execFile } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { guardLeaks } from '../helpers/leaks.js'
import { cgiProxy, havePeer, tempDir } from './harness.js'

const execFileP = promisify(execFile)
const GIT = '/usr/bin/git'
const HTTP_BACKEND = '/usr/lib/git-core/git-http-backend'
const MiB = 1024 * 1024
const FILES = 4
const FILE_MIB = 8

type Tap = Parameters<typeof tempDir>[0]

function gitIn (home: string, extraEnv: Record<string, string> = {}) {
  // The git client's environment from scratch: no proxy variables, no user or system config.
  const env = { PATH: process.env.PATH ?? '', HOME: home, GIT_CONFIG_NOSYSTEM: '1', GIT_TERMINAL_PROMPT: '0', NO_PROXY: '*', ...extraEnv }
  return async (cwd: string, ...args: string[]): Promise<string> =>
    (await execFileP(GIT, ['-c', 'user.name=T', '-c', 'user.email=t@example.invalid', '-c', 'init.defaultBranch=main', ...args], { cwd, env, maxBuffer: 16 * MiB })).stdout.trim()
}

/** Peak RSS growth of this process (the proxy runs in it) while `fn` runs. */
async function rssGrowth (fn: () => Promise<unknown>): Promise<number> {
  const base = process.memoryUsage().rss
  let peak = base
  const timer = setInterval(() => { peak = Math.max(peak, process.memoryUsage().rss) }, 20)
  try { await fn() } finally { clearInterval(timer) }
  return Math.max(peak, process.memoryUsage().rss) - base
}

// One source repository for both tests: FILES × FILE_MIB of random bytes in one commit.
const shared = mkdtempSync(join(tmpdir(), 'pc-git-large-'))
t.teardown(() => rmSync(shared, { recursive: true, force: true }))
const sharedHome = join(shared, 'home')
const source = join(shared, 'source')
t.before(async () => {
  if (!existsSync(GIT)) return
  mkdirSync(sharedHome)
  const git = gitIn(sharedHome)
  await git(shared, 'init', '-q', source)
  for (let i = 0; i < FILES; i++) writeFileSync(join(source, `r${i}.bin`), randomBytes(FILE_MIB * MiB))
  await git(source, 'add', '.')
  await git(source, 'commit', '-qm', 'random data')
})

async function setup (t: Tap): Promise<{ repos: string, dir: string, home: string, url: string }> {
  const dir = tempDir(t, 'pc-git-large-')
  const repos = join(dir, 'repos')
  const home = join(dir, 'home')
  mkdirSync(repos)
  mkdirSync(home)
  const p = await cgiProxy(t, {
    git: { binPath: HTTP_BACKEND, environment: { GIT_PROJECT_ROOT: repos, GIT_HTTP_EXPORT_ALL: '1' }, stopTimeout: 2000 }
  }, [{
    match: { prefix: '/git/' },
    protocol: 'cgi',
    spawn: 'git',
    spoolLimit: '256MiB',
    timeouts: { headers: '60s', idle: '60s' },
    params: { REMOTE_USER: 'git' }
  }])
  return { repos, dir, home, url: `${p.url}/git` }
}

t.test(`git clone of ${FILES * FILE_MIB} MiB of random data through the CGI route`, async (t) => {
  if (!havePeer(t, GIT) || !havePeer(t, HTTP_BACKEND)) return
  guardLeaks(t)
  const s = await setup(t)
  const git = gitIn(s.home)
  await git(s.dir, 'clone', '-q', '--bare', source, join(s.repos, 'big.git'))
  const work = join(s.dir, 'work')
  const started = Date.now()
  const growth = await rssGrowth(() => git(s.dir, 'clone', '-q', `${s.url}/big.git`, work))
  t.comment(`clone took ${Date.now() - started} ms, proxy RSS growth ${(growth / MiB).toFixed(1)} MiB`)
  t.equal(await git(work, 'rev-parse', 'HEAD^{tree}'), await git(source, 'rev-parse', 'HEAD^{tree}'), 'the clone has the same tree')
  await git(work, 'fsck', '--strict', '--no-progress')
  t.pass('git fsck on the clone is clean')
  t.same(readFileSync(join(work, 'r0.bin')), readFileSync(join(source, 'r0.bin')), 'a file byte for byte')
})

// AC-96
t.test(`git push of ${FILES * FILE_MIB} MiB with a 1 MiB http.postBuffer (chunked upload, spooled)`, async (t) => {
  if (!havePeer(t, GIT) || !havePeer(t, HTTP_BACKEND)) return
  guardLeaks(t)
  const s = await setup(t)
  const trace = join(s.dir, 'curl-trace')
  const bare = join(s.repos, 'pushed.git')
  await gitIn(s.home)(s.dir, 'init', '-q', '--bare', bare)
  await gitIn(s.home)(bare, 'config', 'http.receivepack', 'true')
  const git = gitIn(s.home, { GIT_TRACE_CURL: trace, GIT_TRACE_CURL_NO_DATA: '1' })
  const started = Date.now()
  const growth = await rssGrowth(() => git(source, '-c', 'http.postBuffer=1048576', 'push', '-q', `${s.url}/pushed.git`, 'main'))
  t.comment(`push took ${Date.now() - started} ms, proxy RSS growth ${(growth / MiB).toFixed(1)} MiB`)
  const sent = readFileSync(trace, 'latin1')
  t.match(sent, /Send header: POST \/git\/pushed\.git\/git-receive-pack HTTP\/1\.1\s+(?:[^\n]*Send header: [^\n]*\n)*?[^\n]*Send header: Transfer-Encoding: chunked/, 'git sent the pack chunked')
  t.equal(await git(bare, 'rev-parse', 'main'), await git(source, 'rev-parse', 'HEAD'), 'the pushed commit is the remote ref')
  await git(bare, 'fsck', '--strict', '--no-progress')
  t.pass('git fsck on the server repository is clean')
  t.equal(await git(bare, 'rev-parse', 'main^{tree}'), await git(source, 'rev-parse', 'HEAD^{tree}'), 'same tree on the server')
})
