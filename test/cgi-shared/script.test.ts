import t from 'tap'
import { lchown, mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { DirectoryRedirect, fixedScript, isInside, resolveScript, type ResolveScriptInput, type SymlinkPolicy } from '../../src/core/cgi/script.js'
import { ProxyError, type ErrorCode } from '../../src/core/errors.js'
import type { ScriptInfo } from '../../src/core/types.js'

const T = await mkdtemp(join(tmpdir(), 'proxycore-script-'))
t.teardown(() => rm(T, { recursive: true, force: true }))
const www = join(T, 'www')

// The lighttpd symlink-test layout plus traversal canaries (RELIABILITY E).
for (const d of ['www/cgi-bin', 'www/dir', 'www/sub', 'www/a', 'outside', 'www2']) await mkdir(join(T, d), { recursive: true })
for (const f of ['www/cgi-bin/env.sh', 'www/app.php', 'www/upload.jpg', 'www/sub/index.php', 'outside/pwn.sh', 'outside/secret.txt', 'www2/x.php', 'www/.php']) {
  await writeFile(join(T, f), '<?php\n')
}
await symlink('app.php', join(www, 'link-file.php')) // symlinked file
await symlink('sub', join(www, 'linkdir')) // directly symlinked dir
await symlink('../sub', join(www, 'a/b')) // symlinked dir in the middle of the path
await symlink('../outside/pwn.sh', join(www, 'out.sh')) // escapes the docroot
await symlink('../www2/x.php', join(www, 'w2.php')) // sibling with a common string prefix
await symlink('missing.php', join(www, 'dangling.php'))
await symlink('www', join(T, 'wwwlink'))

/** `301 <Location>`: the path names a directory with an index but lacks its trailing slash. */
type Want = Partial<ScriptInfo> | ErrorCode | `301 ${string}`

async function outcome (input: Partial<ResolveScriptInput> & { urlPath: string }): Promise<ScriptInfo | ErrorCode | `301 ${string}`> {
  try {
    return await resolveScript({ docroot: www, rule: { index: ['index.php'] }, symlinks: 'follow', ...input })
  } catch (err) {
    if (err instanceof ProxyError) return err.code
    if (err instanceof DirectoryRedirect) return `301 ${err.location}`
    throw err
  }
}

const cases: Array<[string, Partial<ResolveScriptInput> & { urlPath: string }, Want]> = [
  // AC-29 / AC-31
  ['script + PATH_INFO', { urlPath: '/cgi-bin/env.sh/a/b' }, { filename: join(www, 'cgi-bin/env.sh'), name: '/cgi-bin/env.sh', pathInfo: '/a/b', docroot: www }],
  ['PATH_INFO decoded, case kept', { urlPath: '/cgi-bin/env.sh/A%20B/C' }, { pathInfo: '/A B/C' }],
  ['// and /./ collapse', { urlPath: '/cgi-bin//env.sh/./x' }, { name: '/cgi-bin/env.sh', pathInfo: '/x' }],
  ['trailing slash is PATH_INFO "/"', { urlPath: '/app.php/' }, { name: '/app.php', pathInfo: '/' }],
  ['trailing slash kept after PATH_INFO', { urlPath: '/app.php/x/' }, { pathInfo: '/x/' }],
  ['no PATH_INFO', { urlPath: '/app.php' }, { name: '/app.php', pathInfo: '' }],
  ['UTF-8 decoded', { urlPath: '/app.php/%C3%A9' }, { pathInfo: '/é' }],
  ['encoded slash → 404', { urlPath: '/cgi-bin/env.sh/a%2Fb' }, 'ERR_SCRIPT_NOT_FOUND'],
  ['%00 → 400', { urlPath: '/cgi-bin/env.sh/a%00b' }, 'ERR_BAD_REQUEST'],
  ['%0A → 400', { urlPath: '/cgi-bin/env.sh/a%0Ab' }, 'ERR_BAD_REQUEST'],
  ['%0D → 400', { urlPath: '/cgi-bin/env.sh/a%0Db' }, 'ERR_BAD_REQUEST'],
  ['invalid UTF-8 → 400', { urlPath: '/app.php/%C3' }, 'ERR_BAD_REQUEST'],
  // AC-48 traversal (CVE-2021-41773/42013 inputs)
  ['../..', { urlPath: '/cgi-bin/../../outside/pwn.sh' }, 'ERR_BAD_REQUEST'],
  ['%2e%2e', { urlPath: '/cgi-bin/%2e%2e/%2e%2e/outside/pwn.sh' }, 'ERR_BAD_REQUEST'],
  ['.%2e', { urlPath: '/cgi-bin/.%2e/.%2e/outside/pwn.sh' }, 'ERR_BAD_REQUEST'],
  ['%252e double encoding', { urlPath: '/cgi-bin/%252e%252e/outside/pwn.sh' }, 'ERR_SCRIPT_NOT_FOUND'],
  ['%%32%65', { urlPath: '/cgi-bin/%%32%65%%32%65/outside/pwn.sh' }, 'ERR_BAD_REQUEST'],
  ['..%2f', { urlPath: '/cgi-bin/..%2foutside/pwn.sh' }, 'ERR_SCRIPT_NOT_FOUND'],
  ['backslashes', { urlPath: '/cgi-bin/..\\outside\\pwn.sh' }, 'ERR_BAD_REQUEST'],
  ['%5c', { urlPath: '/cgi-bin/..%5coutside' }, 'ERR_BAD_REQUEST'],
  ['.. in PATH_INFO', { urlPath: '/cgi-bin/env.sh/../../outside/secret.txt' }, 'ERR_BAD_REQUEST'],
  ['relative path', { urlPath: 'app.php' }, 'ERR_BAD_REQUEST'],
  // RELIABILITY §2.2
  ['upload.jpg/x.php is not run as PHP', { urlPath: '/upload.jpg/x.php', rule: { extensions: ['.php'] } }, 'ERR_SCRIPT_FORBIDDEN'],
  ['extension matches', { urlPath: '/app.php/x', rule: { extensions: ['.php'] } }, { name: '/app.php', pathInfo: '/x' }],
  ['a file named only ".php" is not a PHP script', { urlPath: '/.php', rule: { extensions: ['.php'] } }, 'ERR_SCRIPT_FORBIDDEN'],
  ['rule mismatch', { urlPath: '/cgi-bin/env.sh', rule: { extensions: ['.php'] } }, 'ERR_SCRIPT_FORBIDDEN'],
  // AC-52 no source retrieval
  ['trailing spaces', { urlPath: '/app.php%20%20%20' }, 'ERR_SCRIPT_NOT_FOUND'],
  ['trailing dot', { urlPath: '/app.php.' }, 'ERR_SCRIPT_NOT_FOUND'],
  ['::$DATA', { urlPath: '/app.php::$DATA' }, 'ERR_SCRIPT_NOT_FOUND'],
  ['case differs', { urlPath: '/APP.PHP' }, 'ERR_SCRIPT_NOT_FOUND'],
  ['backup suffix', { urlPath: '/app.php~' }, 'ERR_SCRIPT_NOT_FOUND'],
  // AC-53 directories
  ['PATH_INFO below a directory', { urlPath: '/dir/abc/def' }, 'ERR_SCRIPT_NOT_FOUND'],
  ['directory without index', { urlPath: '/dir/' }, 'ERR_SCRIPT_NOT_FOUND'],
  ['directory with index', { urlPath: '/sub/' }, { filename: join(www, 'sub/index.php'), name: '/sub/index.php', pathInfo: '' }],
  ['directory with index, no slash', { urlPath: '/sub' }, '301 /sub/'],
  ['prefix-mounted directory, no slash', { urlPath: '/m/sub', prefix: '/m' }, '301 /m/sub/'],
  ['docroot index', { urlPath: '/', rule: { index: ['app.php'] } }, { name: '/app.php', pathInfo: '' }],
  // Alias-style mount
  ['prefix mount', { urlPath: '/cgi-bin/env.sh/x', prefix: '/cgi-bin/', docroot: join(www, 'cgi-bin') }, { filename: join(www, 'cgi-bin/env.sh'), name: '/cgi-bin/env.sh', pathInfo: '/x' }],
  ['outside the prefix', { urlPath: '/cgi-binx/env.sh', prefix: '/cgi-bin', docroot: join(www, 'cgi-bin') }, 'ERR_SCRIPT_NOT_FOUND'],
  ['missing docroot', { urlPath: '/app.php', docroot: join(T, 'nope') }, 'ERR_SCRIPT_NOT_FOUND']
]

for (const [name, input, want] of cases) {
  t.test(name, async (t) => {
    const got = await outcome(input)
    if (typeof want === 'string') t.equal(got, want)
    else t.match(got, want)
  })
}

// AC-51: the lighttpd allow/deny symlink cases.
const symlinkCases: Array<[string, string, Record<SymlinkPolicy, Want>]> = [
  ['simple file', '/app.php', { follow: { name: '/app.php' }, deny: { name: '/app.php' }, owner: { name: '/app.php' } }],
  ['symlinked file', '/link-file.php', { follow: { name: '/link-file.php', filename: join(www, 'link-file.php') }, deny: 'ERR_SCRIPT_FORBIDDEN', owner: { name: '/link-file.php' } }],
  ['directly symlinked dir', '/linkdir/index.php', { follow: { name: '/linkdir/index.php' }, deny: 'ERR_SCRIPT_FORBIDDEN', owner: { name: '/linkdir/index.php' } }],
  ['symlinked dir in path', '/a/b/index.php/p', { follow: { name: '/a/b/index.php', pathInfo: '/p' }, deny: 'ERR_SCRIPT_FORBIDDEN', owner: { name: '/a/b/index.php' } }],
  ['link out of the docroot', '/out.sh', { follow: 'ERR_SCRIPT_FORBIDDEN', deny: 'ERR_SCRIPT_FORBIDDEN', owner: 'ERR_SCRIPT_FORBIDDEN' }],
  ['link to a sibling sharing the prefix', '/w2.php', { follow: 'ERR_SCRIPT_FORBIDDEN', deny: 'ERR_SCRIPT_FORBIDDEN', owner: 'ERR_SCRIPT_FORBIDDEN' }],
  ['dangling link', '/dangling.php', { follow: 'ERR_SCRIPT_NOT_FOUND', deny: 'ERR_SCRIPT_FORBIDDEN', owner: 'ERR_SCRIPT_NOT_FOUND' }]
]
for (const [name, urlPath, wants] of symlinkCases) {
  for (const policy of ['follow', 'deny', 'owner'] as const) {
    t.test(`symlinks ${policy}: ${name}`, async (t) => {
      const got = await outcome({ urlPath, symlinks: policy })
      const want = wants[policy]
      if (typeof want === 'string') t.equal(got, want)
      else t.match(got, want)
    })
  }
}

t.test('symlinks owner: a link owned by another user is refused', { skip: process.getuid?.() !== 0 ? 'needs root to lchown' : false }, async (t) => {
  await symlink('app.php', join(www, 'foreign.php'))
  await lchown(join(www, 'foreign.php'), 1, 1)
  t.equal(await outcome({ urlPath: '/foreign.php', symlinks: 'owner' }), 'ERR_SCRIPT_FORBIDDEN')
  t.match(await outcome({ urlPath: '/foreign.php', symlinks: 'follow' }), { name: '/foreign.php' })
})

t.test('a symlinked docroot is not a symlink in the walk', async (t) => {
  t.match(await outcome({ urlPath: '/app.php', docroot: join(T, 'wwwlink'), symlinks: 'deny' }), { filename: join(T, 'wwwlink/app.php') })
})

t.test('links are followed hop by hop without looking outside the docroot', async (t) => {
  const L = join(T, 'hops')
  const root = join(L, 'www')
  for (const d of ['www/real/deep', 'www/alias-target', 'private']) await mkdir(join(L, d), { recursive: true })
  for (const f of ['www/real/x.php', 'www/real/deep/y.php', 'www/z.php', 'private/there.php']) await writeFile(join(L, f), '<?php\n')
  await symlink('real/deep', join(root, 'deeplink')) // a directory link inside
  await symlink('../x.php', join(root, 'real/deep/up.php')) // relative, `..` from the real directory
  await symlink('../x.php', join(root, 'deeplink-up.php')) // relative to the link's own directory: www/../x.php, outside
  await symlink('chain2.php', join(root, 'chain1.php')) // a chain inside
  await symlink('z.php', join(root, 'chain2.php'))
  await symlink('..', join(root, 'parent')) // the docroot's parent
  await symlink('../private/there.php', join(root, 'there.php'))
  await symlink('../private/absent.php', join(root, 'absent.php'))
  await symlink('../nodir/absent.php', join(root, 'nodir.php'))
  await symlink('gone/absent.php', join(root, 'gone.php')) // a directory that does not exist, inside
  await symlink('loop2.php', join(root, 'loop1.php'))
  await symlink('loop1.php', join(root, 'loop2.php'))
  const at = async (urlPath: string): Promise<ScriptInfo | ErrorCode | `301 ${string}`> => await outcome({ docroot: root, urlPath, symlinks: 'follow' })
  t.match(await at('/chain1.php'), { name: '/chain1.php' }, 'a chain of links inside')
  t.match(await at('/deeplink/y.php'), { name: '/deeplink/y.php' }, 'through a directory link')
  // The kernel resolves `..` from the link's real directory (www/real/deep/..): www/real/x.php.
  t.match(await at('/deeplink/up.php'), { name: '/deeplink/up.php' }, '.. taken from the real directory of a link met through a linked directory')
  t.equal(await at('/deeplink-up.php'), 'ERR_SCRIPT_FORBIDDEN', '.. out of the docroot')
  t.equal(await at('/parent/private/there.php'), 'ERR_SCRIPT_FORBIDDEN', 'a link to the docroot parent is refused as met')
  t.equal(await at('/there.php'), 'ERR_SCRIPT_FORBIDDEN', 'a link to an existing file outside')
  t.equal(await at('/absent.php'), 'ERR_SCRIPT_FORBIDDEN', 'a link to a missing file outside: the same answer')
  t.equal(await at('/nodir.php'), 'ERR_SCRIPT_FORBIDDEN', 'a link into a missing directory outside: the same answer')
  t.equal(await at('/gone.php'), 'ERR_SCRIPT_FORBIDDEN', 'a link into a missing directory: where it leads cannot be told without looking')
  t.equal(await at('/dangling.php'), 'ERR_SCRIPT_NOT_FOUND', 'unchanged: a link to a missing name in a directory of the docroot')
  t.equal(await outcome({ urlPath: '/dangling.php', symlinks: 'follow' }), 'ERR_SCRIPT_NOT_FOUND')
  t.equal(await at('/loop1.php'), 'ERR_SCRIPT_FORBIDDEN', 'a loop of links')
})

t.test('isInside is boundary-aware', async (t) => {
  t.ok(isInside('/srv/www', '/srv/www/a'))
  t.notOk(isInside('/srv/www', '/srv/www2/a'))
  t.notOk(isInside('/srv/www', '/srv/www'))
  t.notOk(isInside('/srv/www', '/srv'))
  t.ok(isInside('/', '/a'))
})

t.test('fixedScript: single entry point', async (t) => {
  const app = (prefix: string, urlPath: string): ScriptInfo => fixedScript({ scriptFilename: '/srv/app.py', prefix, urlPath })
  t.same(app('/', '/'), { filename: '/srv/app.py', name: '', pathInfo: '/', docroot: '' }, 'root mount: SCRIPT_NAME ""')
  t.same(app('', '/a/b%20c'), { filename: '/srv/app.py', name: '', pathInfo: '/a/b c', docroot: '' })
  t.match(app('/app/', '/app'), { name: '/app', pathInfo: '' })
  t.match(app('/app', '/app/'), { name: '/app', pathInfo: '/' })
  t.match(app('/app', '/app//x/./y/'), { name: '/app', pathInfo: '/x/y/' })
  t.match(fixedScript({ scriptFilename: '/w/index.php', prefix: '/', urlPath: '/x', docroot: '/w' }), { docroot: '/w' })
  const code = (fn: () => unknown): string | undefined => {
    try { fn() } catch (err) { return (err as ProxyError).code }
    return undefined
  }
  t.equal(code(() => app('/app', '/application')), 'ERR_SCRIPT_NOT_FOUND', 'prefix compared segment-wise')
  t.equal(code(() => app('/app', '/app/../etc')), 'ERR_BAD_REQUEST')
  t.equal(code(() => app('/app', '/app/%00')), 'ERR_BAD_REQUEST')
})
