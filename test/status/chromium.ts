/**
 * Headless Chromium driven over the DevTools protocol (CDP) with the `ws` package: load a page,
 * evaluate expressions in it, capture a screenshot, collect console/CSP errors. Chromium runs in its
 * own process group, killed as a whole at teardown and waited for (no sleep).
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import WebSocket from 'ws'
import { processGroup, waitFor } from '../helpers/leaks.js'

export const CHROMIUM = '/usr/bin/chromium'

const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--hide-scrollbars', '--window-size=1280,900']

interface Tap { teardown (fn: () => void | Promise<void>): void }

export interface Page {
  /** Evaluate `expression` in the page and return its value. */
  evaluate<T> (expression: string): Promise<T>
  screenshot (): Promise<Buffer>
  /** Console errors and CSP violations the page reported. */
  readonly errors: string[]
}

export async function openPage (t: Tap, url: string): Promise<Page> {
  const profile = mkdtempSync(join(tmpdir(), 'pc-chromium-'))
  const child = spawn(CHROMIUM, [...FLAGS, `--user-data-dir=${profile}`, '--remote-debugging-port=0', 'about:blank'], { detached: true, stdio: ['ignore', 'ignore', 'pipe'] })
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  t.teardown(async () => {
    await killGroup(child, exited)
    rmSync(profile, { recursive: true, force: true })
  })
  const browserUrl = await devtoolsUrl(child)
  const cdp = new Cdp(browserUrl)
  t.teardown(() => cdp.close())
  await cdp.opened
  const { targetId } = await cdp.send<{ targetId: string }>('Target.createTarget', { url: 'about:blank' })
  const { sessionId } = await cdp.send<{ sessionId: string }>('Target.attachToTarget', { targetId, flatten: true })
  const errors: string[] = []
  cdp.onEvent = (method, params) => {
    if (method === 'Log.entryAdded') {
      const e = (params as { entry: { level: string, text: string } }).entry
      if (e.level === 'error') errors.push(e.text)
    } else if (method === 'Runtime.exceptionThrown') {
      errors.push(JSON.stringify((params as { exceptionDetails: unknown }).exceptionDetails))
    }
  }
  await cdp.send('Log.enable', {}, sessionId)
  await cdp.send('Runtime.enable', {}, sessionId)
  await cdp.send('Page.enable', {}, sessionId)
  await cdp.send('Emulation.setDeviceMetricsOverride', { width: 1280, height: 900, deviceScaleFactor: 1, mobile: false }, sessionId)
  await cdp.send('Page.navigate', { url }, sessionId)
  const page: Page = {
    errors,
    async evaluate<T> (expression: string): Promise<T> {
      const r = await cdp.send<{ result: { value: T }, exceptionDetails?: unknown }>('Runtime.evaluate', { expression, returnByValue: true }, sessionId)
      if (r.exceptionDetails !== undefined) throw new Error(`evaluate failed: ${JSON.stringify(r.exceptionDetails)}`)
      return r.result.value
    },
    async screenshot () {
      const r = await cdp.send<{ data: string }>('Page.captureScreenshot', { format: 'png', captureBeyondViewport: true }, sessionId)
      return Buffer.from(r.data, 'base64')
    },
  }
  await waitFor(async () => (await page.evaluate<string>('document.readyState')) === 'complete', 10_000)
  return page
}

function devtoolsUrl (child: ChildProcess): Promise<string> {
  return new Promise((resolve, reject) => {
    let err = ''
    const timer = setTimeout(() => reject(new Error(`chromium printed no DevTools URL: ${err.slice(0, 2000)}`)), 20_000)
    child.stderr!.setEncoding('utf8').on('data', (s: string) => {
      err += s
      const m = /DevTools listening on (ws:\/\/\S+)/.exec(err)
      if (m !== null) { clearTimeout(timer); resolve(m[1]) }
    })
    child.once('exit', (code) => { clearTimeout(timer); reject(new Error(`chromium exited (${code}): ${err.slice(0, 2000)}`)) })
  })
}

async function killGroup (child: ChildProcess, exited: Promise<void>): Promise<void> {
  const pgid = child.pid!
  if (child.exitCode === null && child.signalCode === null) {
    try { process.kill(-pgid, 'SIGKILL') } catch { /* already gone */ }
    await exited
  }
  // Renderer and GPU helpers share the group; wait until every one of them is gone.
  await waitFor(() => processGroup(pgid).every((p) => p.state === 'Z'), 10_000)
}

class Cdp {
  private readonly ws: WebSocket
  private id = 0
  private readonly pending = new Map<number, { resolve: (v: unknown) => void, reject: (e: Error) => void }>()
  readonly opened: Promise<void>
  onEvent: (method: string, params: unknown) => void = () => {}

  constructor (url: string) {
    this.ws = new WebSocket(url, { perMessageDeflate: false, maxPayload: 256 * 1024 * 1024 })
    this.opened = new Promise((resolve, reject) => { this.ws.once('open', () => resolve()); this.ws.once('error', reject) })
    this.ws.on('error', () => {})
    this.ws.on('message', (data) => {
      const msg = JSON.parse(String(data)) as { id?: number, result?: unknown, error?: { message: string }, method?: string, params?: unknown }
      if (msg.id === undefined) { if (msg.method !== undefined) this.onEvent(msg.method, msg.params); return }
      const p = this.pending.get(msg.id)
      this.pending.delete(msg.id)
      if (msg.error !== undefined) p?.reject(new Error(msg.error.message))
      else p?.resolve(msg.result)
    })
    this.ws.on('close', () => { for (const p of this.pending.values()) p.reject(new Error('CDP connection closed')); this.pending.clear() })
  }

  send<T = unknown> (method: string, params: object, sessionId?: string): Promise<T> {
    const id = ++this.id
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject })
      this.ws.send(JSON.stringify({ id, method, params, ...(sessionId !== undefined ? { sessionId } : {}) }))
    })
  }

  close (): void { this.ws.terminate() }
}

/** Is Chromium there? Missing: skip locally, fail under CI=true. */
export function haveChromium (t: { fail (m: string): void, plan (n: number, m: string): void }): boolean {
  if (existsSync(CHROMIUM)) return true
  if (process.env.CI === 'true') t.fail(`${CHROMIUM} is not installed`)
  else t.plan(0, `${CHROMIUM} is not installed`)
  return false
}
