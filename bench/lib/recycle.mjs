/**
 * Recycling under load (part of `--big` / `--only big`): proxycore spawns php-cgi (fd-0 hand-off,
 * one PHP process per slot) with `maxRequests`, and 32 keep-alive clients hammer it for a while.
 * Every process is retired after its quota, make-before-break; the result is the failure count
 * (anything but a 200 with a pid, or a client error) and how many processes served — counted from
 * the pids PHP itself reports, so the recycling is observed, not assumed.
 */
import { Agent, request } from 'node:http'
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { sampleRss } from './proc.mjs'
import { which } from './peers.mjs'
import { startProxycore } from './scenarios.mjs'

function get (agent, port, path, timeoutMs) {
  return new Promise((resolve) => {
    const r = request({ host: '127.0.0.1', port, path, agent, timeout: timeoutMs }, (res) => {
      let body = ''
      res.setEncoding('latin1')
      res.on('data', (c) => { body += c })
      res.on('end', () => resolve({ status: res.statusCode, body }))
      res.on('error', (err) => resolve({ status: 0, body: String(err.message) }))
    })
    r.on('timeout', () => r.destroy(new Error('timeout')))
    r.on('error', (err) => resolve({ status: 0, body: String(err.message) }))
    r.end()
  })
}

export async function runRecycle ({ ctx, log, seconds = 10, connections = 32, maxRequests = 100, procs = 2 }) {
  const phpCgi = which('phpCgi')
  if (!phpCgi) return { skip: 'php-cgi not installed' }
  const dir = join(ctx.tmp, 'recycle')
  mkdirSync(join(dir, 'www'), { recursive: true })
  writeFileSync(join(dir, 'www', 'pid.php'), '<?php echo getmypid();\n')
  const pc = await startProxycore(ctx, 'proxycore-recycle', {
    spawns: { php: { socketType: 'socket', binPath: phpCgi, socketName: join(dir, 'php.sock'), minProcs: procs, maxProcs: procs, maxRequests, environment: { PHP_FCGI_CHILDREN: '0' } } },
    routes: [{ protocol: 'fastcgi', spawn: 'php', docroot: join(dir, 'www') }],
  })
  const agent = new Agent({ keepAlive: true, maxSockets: connections })
  const rss = sampleRss([{ pid: pc.pid, exclude: /^php-cgi/ }], 100)
  const pids = new Set()
  let requests = 0
  const failures = []
  const deadline = Date.now() + seconds * 1000
  try {
    await Promise.all(Array.from({ length: connections }, async () => {
      while (Date.now() < deadline) {
        const r = await get(agent, pc.port, '/pid.php', 10_000)
        requests++
        if (r.status === 200 && /^\d+$/.test(r.body)) pids.add(r.body)
        else failures.push(`${r.status} ${r.body.slice(0, 80)}`)
      }
    }))
  } finally {
    agent.destroy()
    await pc.stop('SIGTERM', 10_000)
  }
  const result = { seconds, connections, maxRequests, procs, requests, failed: failures.length, firstFailures: failures.slice(0, 3), processes: pids.size, rssMaxKiB: rss.stop() }
  log(`  recycling: ${requests} requests in ${seconds} s, ${connections} connections, maxRequests ${maxRequests} × ${procs} slots → ${pids.size} php-cgi processes served, ${failures.length} failed${failures.length ? ` (${failures.slice(0, 3).join('; ')})` : ''}`)
  return result
}
