/**
 * AC-96: the real `git` client clones and pushes over smart HTTP through proxycore to
 * `git http-backend` (a CGI route with no docroot), using this example's proxycore.yaml.
 * A 5 MiB push with a 64 KiB http.postBuffer makes git send a chunked body: the core spools it so
 * git http-backend gets CONTENT_LENGTH (RFC 3875 §4.2).
 */
import t from 'tap'
import { execFile } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { guardLeaks } from '../../test/helpers/leaks.js'
import { captureLogger, havePeer, tempDir } from '../../test/cgi/harness.js'
import { startGitServer } from './server.js'

const execFileP = promisify(execFile)
const GIT = '/usr/bin/git'
const HTTP_BACKEND = '/usr/lib/git-core/git-http-backend'

t.test('git clone and push through proxycore → git http-backend', async (t) => {
  if (!havePeer(t, GIT) || !havePeer(t, HTTP_BACKEND)) return
  guardLeaks(t)
  const dir = tempDir(t, 'pc-git-')
  const repos = join(dir, 'repos')
  const home = join(dir, 'home')
  mkdirSync(repos)
  mkdirSync(home)
  // The git client's environment from scratch: no proxy variables, no user or system config.
  const clientEnv = { PATH: process.env.PATH ?? '', HOME: home, GIT_CONFIG_NOSYSTEM: '1', GIT_TERMINAL_PROMPT: '0', NO_PROXY: '*' }
  const git = async (cwd: string, ...args: string[]): Promise<string> =>
    (await execFileP(GIT, ['-c', 'user.name=T', '-c', 'user.email=t@example.invalid', '-c', 'init.defaultBranch=main', ...args], { cwd, env: clientEnv, maxBuffer: 16 * 1024 * 1024 })).stdout.trim()

  const bare = join(repos, 'repo.git')
  await git(dir, 'init', '--bare', bare)
  await git(bare, 'config', 'http.receivepack', 'true')

  const { logger } = captureLogger()
  const server = await startGitServer({ env: { PATH: process.env.PATH ?? '', GIT_PROJECT_ROOT: repos, GIT_SERVER_LISTEN: '127.0.0.1:0' }, logger })
  t.teardown(() => server.close())
  const remote = `${server.url}/git/repo.git`

  // First push, from a fresh local repository.
  const seed = join(dir, 'seed')
  await git(dir, 'init', seed)
  writeFileSync(join(seed, 'README'), 'hello through proxycore\n')
  await git(seed, 'add', 'README')
  await git(seed, 'commit', '-m', 'first')
  await git(seed, 'push', remote, 'main')
  t.equal(await git(bare, 'rev-parse', 'main'), await git(seed, 'rev-parse', 'HEAD'), 'first push landed')

  // Clone over HTTP, commit a 5 MiB random blob, push it with a chunked upload.
  const work = join(dir, 'work')
  await git(dir, 'clone', remote, work)
  t.equal(readFileSync(join(work, 'README'), 'utf8'), 'hello through proxycore\n', 'clone has the content')
  writeFileSync(join(work, 'blob.bin'), randomBytes(5 * 1024 * 1024))
  await git(work, 'add', 'blob.bin')
  await git(work, 'commit', '-m', 'big blob')
  await git(work, '-c', 'http.postBuffer=65536', 'push', 'origin', 'main')
  const local = await git(work, 'rev-parse', 'HEAD')
  t.equal(await git(bare, 'rev-parse', 'main'), local, 'pushed commit is the remote ref')
  t.equal(await git(bare, 'log', '-1', '--format=%s', 'main'), 'big blob')
  await git(bare, 'fsck', '--strict')
  t.pass('git fsck on the server repository is clean')

  // A second clone sees both commits and the blob byte for byte.
  const again = join(dir, 'again')
  await git(dir, 'clone', remote, again)
  t.equal(await git(again, 'rev-parse', 'HEAD'), local)
  t.same(readFileSync(join(again, 'blob.bin')), readFileSync(join(work, 'blob.bin')))
  t.notOk(existsSync(join(repos, 'repo.git', 'refs', 'heads', 'master')), 'only the pushed branch exists')
})
