/**
 * The status page and its JSON list the addresses proxycore listens on (`listening`), as Apache's
 * server-status names the server's address: on the real CLI, escaped in the HTML, and updated by
 * a reload that adds a port. An embedder's createStatus (no listeners of proxycore's) has no field.
 */
import t from 'tap'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { guardLeaks } from '../helpers/leaks.js'
import { freePort } from '../helpers/ports.js'
import { backend, get, proxyServer } from '../helpers/servers.js'
import { createStatus } from '../../src/status/index.js'
import { appDir, serveKilled, sighupReload, type Served } from '../cli/run.js'

interface Teardown { teardown (fn: () => void | Promise<void>): void }

/** A backend answering `ok <url>`: its port. */
const okBackend = async (t: Teardown): Promise<number> => (await backend(t, (req, res) => { res.end(`ok ${req.url ?? ''}`) })).port

const yaml = (listen: string[], port: number): string => `listen: ${JSON.stringify(listen)}
status: { path: /server-status }
routes:
  - { name: r, protocol: http, backends: ['127.0.0.1:${port}'] }
`

async function json (url: string): Promise<Record<string, unknown>> {
  const r = await get(`${url}/server-status?format=json`)
  return JSON.parse(r.body.toString()) as Record<string, unknown>
}

async function html (url: string): Promise<string> {
  const r = await get(`${url}/server-status`, { headers: { accept: 'text/html' } })
  return r.body.toString()
}

const escHtml = (v: string): string => v.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`)

const reload = async (s: Served, file: string, text: string): Promise<Record<string, unknown>> => (await sighupReload(s, file, text)).line

t.test('serve: JSON and HTML list the listening addresses, escaped, and follow a reload that adds a port', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  const { dir, file } = appDir(t, '', 'pc-a36-st-')
  const be = await okBackend(t)
  const [p1, p2] = [await freePort(), await freePort()]
  // A socket path with characters the HTML must escape.
  const sock = join(dir, `a<i>&'"x.sock`)
  writeFileSync(file, yaml([`127.0.0.1:${p1}`, `unix:${sock}`], be))
  const { s } = await serveKilled(t, file)
  const url = `http://127.0.0.1:${p1}`
  const before = [`http://127.0.0.1:${p1}`, `unix:${sock}`]
  t.same((await json(url)).listening, before, 'JSON: every listening address, as `serving` logs them')
  t.same((await s.waitLog('serving')).addresses, before)
  let page = await html(url)
  for (const a of before) t.ok(page.includes(escHtml(a)), `HTML names ${a}, escaped`)
  t.notOk(page.includes('<i>&'), 'the socket path is never raw HTML')
  t.ok(page.includes(`<code>${escHtml(`unix:${sock}`)}</code>`), 'shown as code')

  const line = await reload(s, file, yaml([`127.0.0.1:${p1}`, `unix:${sock}`, `127.0.0.1:${p2}`], be))
  t.equal(line.msg, 'reloaded')
  const after = [...before, `http://127.0.0.1:${p2}`]
  t.same((await json(url)).listening, after, 'JSON after the reload: the added port too')
  t.same((await json(`http://127.0.0.1:${p2}`)).listening, after, 'the same on the new port')
  page = await html(`http://127.0.0.1:${p2}`)
  t.ok(page.includes(escHtml(`http://127.0.0.1:${p2}`)), 'HTML after the reload names the added port')

  const removed = await reload(s, file, yaml([`127.0.0.1:${p2}`], be))
  t.equal(removed.msg, 'reloaded')
  t.same((await json(`http://127.0.0.1:${p2}`)).listening, [`http://127.0.0.1:${p2}`], 'a removed address is no longer listed')
  s.child.kill('SIGTERM')
  t.equal(await s.exited, 0)
})

t.test('createStatus on a createProxy proxy: no `listening` field, no listening line', async (t) => {
  guardLeaks(t)
  const be = await okBackend(t)
  const { proxy, url } = await proxyServer(t, { routes: [{ name: 'r', protocol: 'http', backends: [`127.0.0.1:${be}`] }] })
  const status = createStatus(proxy, { live: false })
  t.teardown(() => status.close())
  const snap = status.snapshot()
  t.notOk('listening' in snap, 'the snapshot has no listening field')
  t.ok('inflight' in snap)
  // And a target that names its listeners gets them in the snapshot (what the gateway passes).
  const named = createStatus({ routes: proxy.routes, events: proxy.events, inflight: 0, listening: [url, 'unix:/run/<x>.sock'] }, { live: false })
  t.teardown(() => named.close())
  t.same(named.snapshot().listening, [url, 'unix:/run/<x>.sock'])
})
