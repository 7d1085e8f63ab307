/**
 * The HTML page in a real browser (headless Chromium): it renders, its strict CSP lets its own
 * script run and nothing else, the live WebSocket updates the DOM without a reload, and a
 * screenshot is kept as an artifact (path in the test output) for a human to judge.
 */
import t from 'tap'
import { mkdirSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { freePort } from '../helpers/ports.js'
import { backend, closeServer, get } from '../helpers/servers.js'
import { appScript, statusRig } from './harness.js'
import { haveChromium, openPage } from './chromium.js'

t.test('page in Chromium: renders, updates live without reloading, screenshot', async (t) => {
  if (!haveChromium(t)) return
  guardLeaks(t, { timeoutMs: 15_000 })
  // Stopped mid-test and expected refused: a port no listen(0) elsewhere can take meanwhile.
  const a = await backend(t, (_req, res) => res.end('a'), await freePort())
  const b = await backend(t, (_req, res) => res.end('b'))
  const rig = await statusRig(t, {
    spawns: {
      app: { binPath: [process.execPath, appScript], socketName: '127.0.0.1:0', minProcs: 2, maxProcs: 2, idleTimeout: 0, maxRequests: 500, stopTimeout: '2s' },
      legacy: { binPath: [process.execPath, appScript, 'fail'], socketName: '127.0.0.1:0', restart: { initialDelay: '50ms', maxDelay: '100ms', maxStarts: 2, window: '30s' } },
    },
    routes: [
      { name: 'api', match: { prefix: '/api/' }, protocol: 'http', backends: [a.address, b.address], balance: 'round-robin', disableTime: '60s' },
      { name: 'app', match: { prefix: '/app/' }, protocol: 'http', spawn: 'app' },
      { name: 'legacy', match: { prefix: '/legacy/' }, protocol: 'http', spawn: 'legacy' },
    ],
  }, { live: { intervalMs: 250 } })
  await closeServer(a.server)
  for (let i = 0; i < 8; i++) await get(`${rig.url}/api/x${i}`)
  for (let i = 0; i < 12; i++) await get(`${rig.url}/app/x${i}`)
  await get(`${rig.url}/legacy/x`)
  t.ok(await waitFor(() => rig.status.snapshot().spawns.find((s) => s.name === 'legacy')?.failed === true, 15_000), 'legacy is FAILED')

  const page = await openPage(t, `${rig.url}/server-status`)
  t.equal(await page.evaluate<string>('document.title'), 'proxycore status')
  t.ok(await waitFor(async () => (await page.evaluate<string>('document.getElementById("live").className')) === 'on', 10_000), 'live badge on: WebSocket open')
  await page.evaluate('window.__noReload = true')
  const seqOf = (): Promise<number> => page.evaluate<number>('Number(document.getElementById("live").getAttribute("data-seq") || 0)')
  t.ok(await waitFor(async () => (await seqOf()) >= 1, 10_000), 'a pushed snapshot was rendered (data-seq is set only by the socket)')

  // New traffic after load must appear in the DOM through the socket.
  const cell = 'Array.from(document.querySelectorAll("tr.route")).find((r) => r.querySelector("b").textContent === "app").children[5].textContent'
  t.equal(await page.evaluate<string>(cell), '12')
  for (let i = 0; i < 5; i++) await get(`${rig.url}/app/y${i}`)
  t.ok(await waitFor(async () => (await page.evaluate<string>(cell)) === '17', 10_000), 'request count updated in place to 17')
  t.equal(await page.evaluate<boolean>('window.__noReload === true'), true, 'same document: no reload')
  t.equal(await page.evaluate<number>('performance.getEntriesByType("navigation").length'), 1)

  t.equal(await page.evaluate<number>('document.querySelectorAll("section.spawn.failed").length'), 1, 'FAILED spawn section')
  t.match(await page.evaluate<string>('document.querySelector("section.spawn.failed pre").textContent'), /cannot connect to database <db\.internal>/, 'stderr tail shown as text')
  t.equal(await page.evaluate<number>('document.querySelectorAll("section.spawn:not(.failed) tbody tr").length'), 2, 'two processes listed')
  t.ok(await page.evaluate<boolean>('Array.from(document.querySelectorAll(".badge")).some((b) => b.textContent === "DISABLED")'), 'dead backend badge')
  const failedColor = await page.evaluate<string>('getComputedStyle(document.querySelector("section.spawn.failed")).borderTopColor')
  t.equal(failedColor, 'rgb(211, 48, 47)', 'the FAILED section has the red border (inline CSS applied)')
  t.same(page.errors, [], 'no console errors, no CSP violations')

  const png = await page.screenshot()
  t.ok(png.subarray(1, 4).toString() === 'PNG' && png.length > 10_000, 'screenshot is a PNG')
  const dir = join(tmpdir(), 'proxycore-artifacts')
  mkdirSync(dir, { recursive: true })
  const file = join(dir, 'status-page.png')
  writeFileSync(file, png)
  t.comment(`status page screenshot: ${file}`)
})
