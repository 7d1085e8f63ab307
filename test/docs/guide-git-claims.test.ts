/**
 * docs/guides/cgi-and-git.md, "Pushes", with the real git client against `git http-backend` through
 * a CGI route: git http-backend serves git-receive-pack only when REMOTE_USER is set or the
 * repository sets `http.receivepack true`. A route's `params.REMOTE_USER` counts as authenticated
 * (the push lands without http.receivepack); with neither the push is refused with 403; with only
 * `http.receivepack true` it lands.
 */
import t from 'tap'
import { execFile } from 'node:child_process'
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { guardLeaks } from '../helpers/leaks.js'
import { get } from '../helpers/servers.js'
import { cgiProxy, havePeer, tempDir } from '../cgi/harness.js'

const execFileP = promisify(execFile)
const GIT = '/usr/bin/git'
const HTTP_BACKEND = '/usr/lib/git-core/git-http-backend'

type Tap = Parameters<typeof tempDir>[0]

function gitIn (home: string) {
  // The git client's environment from scratch: no proxy variables, no user or system config.
  const env = { PATH: process.env.PATH ?? '', HOME: home, GIT_CONFIG_NOSYSTEM: '1', GIT_TERMINAL_PROMPT: '0', NO_PROXY: '*' }
  return async (cwd: string, ...args: string[]): Promise<string> =>
    (await execFileP(GIT, ['-c', 'user.name=T', '-c', 'user.email=t@example.invalid', '-c', 'init.defaultBranch=main', ...args], { cwd, env })).stdout.trim()
}

/** A proxy with the guide's git route (params.REMOTE_USER optional), a bare repo and a source repo with one commit. */
async function setup (t: Tap, opts: { remoteUser: boolean, receivepack: boolean }) {
  const dir = tempDir(t, 'pc-doc-git-')
  const repos = join(dir, 'repos')
  const home = join(dir, 'home')
  const source = join(dir, 'source')
  mkdirSync(repos)
  mkdirSync(home)
  const git = gitIn(home)
  await git(dir, 'init', '-q', source)
  writeFileSync(join(source, 'README'), 'hi\n')
  await git(source, 'add', 'README')
  await git(source, 'commit', '-qm', 'init')
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
