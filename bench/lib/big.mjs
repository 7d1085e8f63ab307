/**
 * --big: a 1 GiB upload and a 1 GiB download through proxycore's HTTP adapter, sha256 checked end
 * to end (both ends generate the same deterministic stream), proxy RSS growth measured.
 */
import { request } from 'node:http'
import { createHash } from 'node:crypto'
import { pipeline } from 'node:stream/promises'
import { genSha256, genStream } from './gen.mjs'
import { start, sampleRss, treeRssKiB } from './proc.mjs'
import { startProxycore } from './scenarios.mjs'
import { fileURLToPath } from 'node:url'

function req (port, method, path, body) {
  return new Promise((resolve, reject) => {
    const r = request({ host: '127.0.0.1', port, method, path, headers: body ? { 'content-type': 'application/octet-stream', 'transfer-encoding': 'chunked' } : {} }, resolve)
    r.on('error', reject)
    if (body) pipeline(body, r).catch(reject)
    else r.end()
  })
}

export async function runBig ({ ctx, size, log }) {
  log(`\n## Memory: ${size} B upload and download through proxycore (HTTP adapter)`)
  const be = await start('backend-big', process.execPath, [fileURLToPath(new URL('../servers/backend.mjs', import.meta.url))])
  const pc = await startProxycore(ctx, 'proxycore-big', { routes: [{ protocol: 'http', backends: [`127.0.0.1:${be.port}`] }] })
  const expected = genSha256(size)
  const out = []
  try {
    // warm the process so "before" is a steady state, not a cold heap
    for (let i = 0; i < 50; i++) { const r = await req(pc.port, 'GET', '/65536'); r.resume(); await new Promise((res) => r.on('end', res)) }
    for (const direction of ['upload', 'download']) {
      const before = treeRssKiB(pc.pid)
      const rss = sampleRss([{ pid: pc.pid, exclude: null }], 50)
      const t0 = Date.now()
      let ok = false
      let error
      try {
        if (direction === 'upload') {
          const res = await req(pc.port, 'POST', '/upload', genStream(size))
          let text = ''
          for await (const c of res) text += c
          const [hash, n] = text.trim().split(' ')
          ok = res.statusCode === 200 && hash === expected && Number(n) === size
          if (!ok) error = `status ${res.statusCode}, ${n} bytes, sha256 ${hash === expected ? 'ok' : 'MISMATCH'}`
        } else {
          const res = await req(pc.port, 'GET', `/download/${size}`)
          const h = createHash('sha256')
          let n = 0
          for await (const c of res) { n += c.length; h.update(c) }
          const hash = h.digest('hex')
          ok = res.statusCode === 200 && hash === expected && n === size
          if (!ok) error = `status ${res.statusCode}, ${n} bytes, sha256 ${hash === expected ? 'ok' : 'MISMATCH'}`
        }
      } catch (err) { error = err.message }
      const seconds = (Date.now() - t0) / 1000
      const max = rss.stop()
      out.push({ adapter: 'http', direction, bytes: size, ok, error, seconds, rssBeforeKiB: before, rssMaxKiB: max })
      log(`  ${direction}: ${ok ? 'sha256 intact' : error}, ${seconds.toFixed(1)} s, RSS ${(before / 1024).toFixed(1)} → max ${(max / 1024).toFixed(1)} MiB (growth ${((max - before) / 1024).toFixed(1)} MiB)`)
    }
  } finally {
    await pc.stop()
    await be.stop()
  }
  log('  (FastCGI/SCGI/CGI large-body runs: not yet in the bench — their peers cap request bodies by config)')
  return out
}
