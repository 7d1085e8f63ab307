/**
 * Shared by the SCGI large-transfer and fault tests: real uWSGI (`--scgi-socket`, python3 plugin,
 * one worker by default, so a worker left busy by a fault hangs the next request) behind
 * createProxy, the fixture's byte pattern (fixtures/transfer_app.py), and probes: the worker's
 * read/written byte counters (/proc/PID/io), the proxy's spool fds, "is the worker free".
 */
import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { request, type IncomingMessage } from 'node:http'
import { connect, type Socket } from 'node:net'
import { fileURLToPath } from 'node:url'
import type { RequestEndEvent } from '../../src/index.js'
import { guardLeaks, openFds, waitFor } from '../helpers/leaks.js'
import { proxyServer } from '../helpers/servers.js'
import { captureLogger, type LogLine } from '../cgi/harness.js'
import { gcFromV8 } from '../../src/core/scavenge.js'
import { launchUwsgi } from './uwsgi-peer.js'

export const APP = fileURLToPath(new URL('./fixtures/transfer_app.py', import.meta.url))
export const MiB = 1024 * 1024

export type Tap = Parameters<typeof guardLeaks>[0]

// --- the fixture's pattern (transfer_app.py): 64 KiB blocks, block i starts with i (8 bytes BE) ---
const BLOCK = 65536
const BASE = Buffer.alloc(BLOCK, 0).map((_, i) => i & 0xff)
export function block (i: number, n = BLOCK): Buffer {
  const b = Buffer.from(BASE.subarray(0, n))
  const head = Buffer.alloc(8)
  head.writeBigUInt64BE(BigInt(i))
  head.copy(b, 0, 0, Math.min(8, n))
  return b
}
export function patternSha (n: number): string {
  const h = createHash('sha256')
  for (let i = 0, off = 0; off < n; i++, off += BLOCK) h.update(block(i, Math.min(BLOCK, n - off)))
  return h.digest('hex')
}

// --- uWSGI: master + one worker in its own process group, killed whole at teardown ---
/** `args` (socket path → its args): one worker by default, so a worker left busy shows. */
export async function startUwsgi (t: Tap, args = (socketPath: string): string[] => [
  '--plugin', 'python3', '--scgi-socket', socketPath, '--wsgi-file', APP, '--master', '--processes', '1',
  '--die-on-term', '--disable-logging', '--buffer-size', '32768'
]): Promise<string> {
  const peer = await launchUwsgi(args)
  t.teardown(peer.stop)
  return peer.socketPath
}

const scavenge = gcFromV8()

export interface Setup { port: number, lines: LogLine[], events: RequestEndEvent[] }

export async function setup (t: Tap, route: Record<string, unknown> = {}, args?: Parameters<typeof startUwsgi>[1]): Promise<Setup> {
  guardLeaks(t, { timeoutMs: 10_000 })
  const socketPath = await startUwsgi(t, args)
  const { logger, lines } = captureLogger()
  const { proxy, port } = await proxyServer(t, {
    logger,
    // V8's gc, as `proxycore serve` hands it (src/core/scavenge.ts): spent 64 KiB chunks are
    // collected every 8 MiB moved. Without it the first 128 MiB download in a fresh process grew
    // RSS by 69-104 MiB of garbage (the client's chunks, in this process, too), which says
    // nothing about buffering; with it, what the RSS bound sees is what is held.
    gc: scavenge,
    routes: [{ match: { prefix: '/app/' }, protocol: 'scgi', backends: [`unix:${socketPath}`], scriptFilename: APP, ...route }]
  })
  const events: RequestEndEvent[] = []
  proxy.events.on('request:end', (e: RequestEndEvent) => events.push(e))
  return { port, lines, events }
}

/** Peak RSS growth of this process (proxy and client both run in it) while `fn` runs. */
export async function rssGrowth<T> (fn: () => Promise<T>): Promise<{ result: T, growth: number }> {
  const base = process.memoryUsage().rss
  let peak = base
  const timer = setInterval(() => { peak = Math.max(peak, process.memoryUsage().rss) }, 20)
  try {
    const result = await fn()
    return { result, growth: Math.max(peak, process.memoryUsage().rss) - base }
  } finally {
    clearInterval(timer)
  }
}
export const mib = (n: number): string => `${(n / MiB).toFixed(1)} MiB`

/** Bytes a process wrote through write(2)-family calls (its sockets included). */
export function wchar (pid: number): number {
  return Number(/^wchar: (\d+)$/m.exec(readFileSync(`/proc/${pid}/io`, 'utf8'))?.[1])
}
export function rchar (pid: number): number {
  return Number(/^rchar: (\d+)$/m.exec(readFileSync(`/proc/${pid}/io`, 'utf8'))?.[1])
}
export const spoolFds = (): string[] => [...openFds().values()].filter((p) => p.includes('proxycore-spool-'))

/** A small request that must be answered: the single uWSGI worker is free. Resolves with its pid. */
export async function workerFree (port: number): Promise<number> {
  const res = await new Promise<{ status: number, body: string }>((resolve, reject) => {
    const req = request({ port, host: '127.0.0.1', method: 'POST', path: '/app/?sink=1', agent: false, headers: { 'content-length': '3' }, timeout: 30_000 }, (r) => {
      let body = ''
      r.setEncoding('utf8')
      r.on('data', (c: string) => { body += c })
      r.on('end', () => resolve({ status: r.statusCode ?? 0, body }))
    })
    req.on('timeout', () => req.destroy(new Error('the uWSGI worker was not freed: no answer in 30 s')))
    req.on('error', reject)
    req.end('abc')
  })
  if (res.status !== 200) throw new Error(`next request: ${res.status} ${res.body}`)
  const out = JSON.parse(res.body) as { pid: number, body_len: number }
  if (out.body_len !== 3) throw new Error(`next request: ${res.body}`)
  return out.pid
}

/** The one `request:end` for `url`, once it is there. */
export async function endOf (s: Setup, url: string): Promise<RequestEndEvent | undefined> {
  await waitFor(() => s.events.some((e) => e.url === url), 20_000)
  return s.events.find((e) => e.url === url)
}

export interface Upload { status: number, json: { pid: number, body_len: number, body_sha256: string } | null }

/**
 * POST `total` pattern bytes (Content-Length or chunked), writing with backpressure; `pause`: stop
 * sending for `ms` once `after` bytes went (the stimulus: a client that pauses in its upload).
 */
export function upload (port: number, path: string, total: number, chunked: boolean, sha: ReturnType<typeof createHash>, pause?: { after: number, ms: number }): Promise<Upload> {
  return new Promise((resolve, reject) => {
    const headers = chunked ? { 'transfer-encoding': 'chunked' } : { 'content-length': String(total) }
    const req = request({ port, host: '127.0.0.1', method: 'POST', path, agent: false, headers }, (res) => {
      let text = ''
      res.setEncoding('utf8')
      res.on('data', (c: string) => { text += c })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, json: res.statusCode === 200 ? JSON.parse(text) as Upload['json'] : null }))
      res.on('error', reject)
    })
    req.on('error', reject)
    let i = 0
    let sent = 0
    let paused = false
    const pump = (): void => {
      while (sent < total) {
        if (pause !== undefined && !paused && sent >= pause.after) {
          paused = true
          void waitFor(() => false, pause.ms, 100).then(pump)
          return
        }
        const b = block(i++, Math.min(BLOCK, total - sent))
        sha.update(b)
        sent += b.length
        if (!req.write(b)) { req.once('drain', pump); return }
      }
      req.end()
    }
    pump()
  })
}

export interface Download { status: number, length: string | undefined, chunked: boolean, bytes: number, sha: string, complete: boolean }

/**
 * GET `path` with a client that reads 1 MiB, then stops reading for `pauseMs` (the stimulus: a
 * slow client); `onPause(res)` runs as it stops, `whilePaused()` on every poll of the pause.
 */
export function pausingDownload (port: number, path: string, pauseMs: number, onPause: (res: IncomingMessage) => void = () => {}, whilePaused: () => void = () => {}): Promise<Download> {
  return new Promise((resolve, reject) => {
    const req = request({ port, host: '127.0.0.1', path, agent: false }, (res) => {
      const h = createHash('sha256')
      let bytes = 0
      let paused = false
      res.on('data', (c: Buffer) => {
        h.update(c)
        bytes += c.length
        if (paused || bytes < MiB) return
        paused = true
        res.pause()
        onPause(res)
        void waitFor(() => { whilePaused(); return false }, pauseMs, 50).then(() => res.resume())
      })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, length: res.headers['content-length'], chunked: res.headers['transfer-encoding'] === 'chunked', bytes, sha: h.digest('hex'), complete: res.complete }))
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end()
  })
}

export interface Raw { head: string, body: Buffer, ended: 'fin' | 'error' }

/** GET on a raw socket (Connection: close), keeping every byte; `onData` sees the running total. */
export function rawGet (port: number, path: string, onData: (head: string, got: number) => void): Promise<Raw> {
  return new Promise((resolve) => {
    const sock: Socket = connect(port, '127.0.0.1')
    const chunks: Buffer[] = []
    let all = Buffer.alloc(0)
    let head: string | null = null
    let ended: Raw['ended'] = 'fin'
    sock.on('data', (c: Buffer) => {
      chunks.push(c)
      if (head === null) {
        all = Buffer.concat(chunks)
        const i = all.indexOf('\r\n\r\n')
        if (i === -1) return
        head = all.toString('latin1', 0, i)
      }
      onData(head, chunks.reduce((n, x) => n + x.length, 0))
    })
    sock.on('error', () => { ended = 'error' })
    sock.on('close', () => {
      const raw = Buffer.concat(chunks)
      const i = raw.indexOf('\r\n\r\n')
      resolve({ head: head ?? raw.toString('latin1'), body: i === -1 ? Buffer.alloc(0) : raw.subarray(i + 4), ended })
    })
    sock.write(`GET ${path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`)
  })
}
