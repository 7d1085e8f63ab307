/**
 * Status tests: a proxy with the status handler mounted in front of it (the way an embedder and
 * the gateway mount it), a Prometheus text parser, and a WebSocket client that collects pushes.
 */
import { createServer, request, type IncomingHttpHeaders, type Server } from 'node:http'
import { fileURLToPath } from 'node:url'
import WebSocket from 'ws'
import { createProxy, silentLogger, type CreateProxyOptions, type Proxy } from '../../src/index.js'
import { createStatus, type StatusHandler, type StatusOptions, type StatusSnapshot } from '../../src/status/index.js'
import { closeServer, listen } from '../helpers/servers.js'

interface Tap { teardown (fn: () => void | Promise<void>): void }

export const appScript = fileURLToPath(new URL('./fixtures/app.mjs', import.meta.url))

export interface StatusRig { proxy: Proxy, status: StatusHandler, server: Server, port: number, url: string }

/** createProxy + createStatus in front of it on one loopback server; all closed at teardown. */
export async function statusRig (t: Tap, config: CreateProxyOptions, opts: StatusOptions = {}): Promise<StatusRig> {
  const proxy = await createProxy({ logger: silentLogger, ...config })
  const status = createStatus(proxy, opts)
  const server = createServer((req, res) => { if (!status.handler(req, res)) proxy.handler(req, res) })
  server.on('upgrade', (req, socket, head) => { if (!status.upgrade(req, socket, head)) proxy.upgrade(req, socket, head) })
  const port = await listen(server)
  t.teardown(async () => {
    await status.close()
    await closeServer(server)
    await proxy.close(1000)
  })
  return { proxy, status, server, port, url: `http://127.0.0.1:${port}` }
}

export interface Reply { status: number, headers: IncomingHttpHeaders, body: string }

/** GET without keep-alive, optionally from a chosen loopback source address. */
export function fetchText (url: string, opts: { headers?: Record<string, string>, localAddress?: string, method?: string } = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: opts.method ?? 'GET', headers: opts.headers, agent: false, ...(opts.localAddress ? { localAddress: opts.localAddress } : {}) }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (c: string) => { body += c })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }))
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end()
  })
}

export async function snapshot (rig: StatusRig, path = '/server-status'): Promise<StatusSnapshot> {
  const r = await fetchText(`${rig.url}${path}?format=json`)
  if (r.status !== 200) throw new Error(`status JSON answered ${r.status}: ${r.body}`)
  return JSON.parse(r.body) as StatusSnapshot
}

/** Prometheus text -> `name{labels}` -> value, and the TYPE of every family. */
export interface Scrape { values: Map<string, number>, types: Map<string, string>, text: string }

export function parseProm (text: string): Scrape {
  const values = new Map<string, number>()
  const types = new Map<string, string>()
  for (const line of text.split('\n')) {
    if (line === '') continue
    const type = /^# TYPE (\S+) (\S+)$/.exec(line)
    if (type !== null) { types.set(type[1], type[2]); continue }
    if (line.startsWith('#')) continue
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{.*\})?) (\S+)$/.exec(line)
    if (m === null) throw new Error(`not an exposition line: ${JSON.stringify(line)}`)
    values.set(m[1], Number(m[2]))
  }
  return { values, types, text }
}

export async function scrape (rig: StatusRig, path = '/metrics'): Promise<Scrape> {
  const r = await fetchText(`${rig.url}${path}`)
  if (r.status !== 200) throw new Error(`metrics answered ${r.status}`)
  if (!String(r.headers['content-type']).startsWith('text/plain; version=0.0.4')) throw new Error(`content-type ${r.headers['content-type']}`)
  return parseProm(r.body)
}

/** Every counter series present in both scrapes has not gone down. Returns the offenders. */
export function decreasedCounters (before: Scrape, after: Scrape): string[] {
  const out: string[] = []
  for (const [series, v] of before.values) {
    const family = series.replace(/\{.*$/, '')
    if (after.types.get(family) !== 'counter' && !family.endsWith('_bucket') && !family.endsWith('_count')) continue
    const now = after.values.get(series)
    if (now !== undefined && now < v) out.push(`${series}: ${v} -> ${now}`)
  }
  return out
}

/** A live-view client: every pushed message in order, and a way to wait for one. */
export interface LiveClient {
  ws: WebSocket
  messages: Array<{ type: string, seq: number, snapshot: StatusSnapshot }>
  next (pred?: (m: LiveClient['messages'][number]) => boolean, ms?: number): Promise<LiveClient['messages'][number]>
  close (): Promise<void>
}

export async function liveClient (url: string): Promise<LiveClient> {
  const ws = new WebSocket(url)
  const messages: LiveClient['messages'] = []
  const waiters = new Set<() => void>()
  ws.on('message', (data) => {
    messages.push(JSON.parse(String(data)) as LiveClient['messages'][number])
    for (const w of waiters) w()
  })
  await new Promise<void>((resolve, reject) => { ws.once('open', () => resolve()); ws.once('error', reject) })
  let seen = 0
  return {
    ws,
    messages,
    next (pred = () => true, ms = 5000) {
      return new Promise((resolve, reject) => {
        const check = (): void => {
          while (seen < messages.length) {
            const m = messages[seen++]
            if (pred(m)) { waiters.delete(check); clearTimeout(timer); resolve(m); return }
          }
        }
        const timer = setTimeout(() => { waiters.delete(check); reject(new Error(`no matching live message within ${ms} ms`)) }, ms)
        waiters.add(check)
        check()
      })
    },
    async close () {
      if (ws.readyState === ws.CLOSED) return
      await new Promise<void>((resolve) => { ws.once('close', () => resolve()); ws.close() })
    },
  }
}
