/**
 * The demo started the README's way (`node dist/cli/main.js serve examples/demo/proxycore.yaml`),
 * on an OS-assigned port: every link on the home page answers 200 through its protocol, and
 * SIGTERM stops every backend.
 */
import t from 'tap'
import { existsSync } from 'node:fs'
import { guardLeaks, processGroup, waitFor, alive } from '../helpers/leaks.js'
import { serve } from '../cli/run.js'

t.test('npm start: every link on the home page answers', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  const s = await serve('examples/demo/proxycore.yaml', { PROXYCORE_LISTEN: '127.0.0.1:0' })
  t.teardown(() => { try { process.kill(-(s.child.pid as number), 'SIGKILL') } catch {} })
  const home = await fetch(`${s.url}/`)
  t.equal(home.status, 200)
  t.match(home.headers.get('content-type'), /^text\/html/, 'the home page is a static file')
  t.ok(home.headers.get('etag'), 'with an ETag')
  const html = await home.text()
  const links = [...html.matchAll(/href="([^"]+)"/g)].map((m) => m[1])
  t.ok(links.length >= 8, `links: ${links.join(' ')}`)
  const php = existsSync('/usr/bin/php-cgi') || process.env.CI === 'true'
  const expects: Record<string, RegExp> = {
    '/style.css': /system-ui/, '/app/': /HTTP backend/, '/fcgi/': /FastCGI backend/, '/scgi/': /SCGI backend/,
    '/cgi-bin/hello.sh': /CGI script \(sh\)/, '/cgi-bin/hello.mjs': /CGI script \(node/, '/php/': /PHP \d/, '/server-status': /proxycore/,
  }
  for (const link of links) {
    if (link === '/php/' && !php) continue
    const r = await fetch(new URL(link, s.url))
    const body = await r.text()
    t.equal(r.status, 200, link)
    const want = Object.entries(expects).find(([p]) => link.startsWith(p))?.[1]
    if (want !== undefined) t.match(body, want, `${link} served by its backend`)
  }
  const st = await (await fetch(`${s.url}/server-status?format=json`)).json() as { spawns: Array<{ processes: Array<{ pid: number }> }> }
  const pids = st.spawns.flatMap((x) => x.processes.map((p) => p.pid))
  t.ok(pids.length >= 4)
  s.child.kill('SIGTERM')
  t.equal(await s.exited, 0)
  t.ok(await waitFor(() => processGroup(s.child.pid as number).length === 0 && pids.every((p) => !alive(p))), 'no backend left')
})
