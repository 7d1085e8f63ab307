/**
 * A static route as operators write it: `proxycore check` accepts a good one and names the path of
 * a bad one; `proxycore serve` serves the files behind a PHP route, and the route is on the status
 * page. The real CLI (dist, rebuilt when src is newer).
 */
import t from 'tap'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { guardLeaks } from '../helpers/leaks.js'
import { runCli, serve } from '../cli/run.js'

guardLeaks(t, { timeoutMs: 10_000 })

function site (t: { teardown (fn: () => void): void }): { dir: string, root: string } {
  const dir = mkdtempSync(join(tmpdir(), 'pc-static-cli-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const root = join(dir, 'www')
  mkdirSync(join(root, 'css'), { recursive: true })
  writeFileSync(join(root, 'css', 'app.css'), 'a { color: blue }')
  writeFileSync(join(root, 'index.php'), '<?php echo "php";')
  return { dir, root }
}

const goodConfig = (root: string): string => `listen: 127.0.0.1:0
status: { path: /server-status }
routes:
  - name: php
    match: { extension: .php }
    protocol: cgi
    spawn: php
    docroot: ${root}
    params: { REDIRECT_STATUS: "200" }
  - name: assets
    match: { extension: [.css, .js, .png] }
    protocol: static
    docroot: ${root}
    options: { cacheControl: "public, max-age=600" }
spawns:
  php: { socketType: pipe, binPath: /usr/bin/php-cgi }
`

t.test('check: a good static route passes, a bad one names its path', async (t) => {
  const { dir, root } = site(t)
  writeFileSync(join(dir, 'good.yaml'), goodConfig(root))
  const ok = await runCli(['check', join(dir, 'good.yaml')])
  t.equal(ok.code, 0, ok.stderr)
  writeFileSync(join(dir, 'bad.yaml'), `routes:
  - protocol: static
    docroot: ${root}
    backends: [127.0.0.1:9]
  - protocol: static
    spawn: php
  - protocol: static
`)
  const bad = await runCli(['check', join(dir, 'bad.yaml')])
  t.equal(bad.code, 2)
  t.match(bad.stderr, /bad\.yaml:4:\d+: \/routes\/0\/backends: protocol static serves files from `docroot` itself/)
  t.match(bad.stderr, /\/routes\/1\/spawn: protocol static serves files/)
  t.match(bad.stderr, /\/routes\/1: protocol static needs `docroot`/)
  t.match(bad.stderr, /\/routes\/2: protocol static needs `docroot`/)
})

t.test('serve: files beside PHP, on the status page', async (t) => {
  const { dir, root } = site(t)
  writeFileSync(join(dir, 'good.yaml'), goodConfig(root))
  const s = await serve(join(dir, 'good.yaml'))
  t.teardown(async () => { s.child.kill('SIGTERM'); await s.exited })
  const css = await fetch(`${s.url}/css/app.css`)
  t.equal(css.status, 200)
  t.equal(await css.text(), 'a { color: blue }')
  t.equal(css.headers.get('cache-control'), 'public, max-age=600')
  const php = await fetch(`${s.url}/index.php`)
  t.equal(await php.text(), 'php', 'the .php route first')
  const status = await (await fetch(`${s.url}/server-status?format=json`)).json() as { routes: Array<{ name: string }> }
  t.ok(status.routes.some((r) => r.name === 'assets'), 'the static route in the route table')
})
