/**
 * docs/reference/status.md read as a new operator, claim by claim, where no test in test/status/
 * already asserts it: the exported defaults, every metric of the metrics table (name, type,
 * labels) in a real scrape, and the JSON access log's `\xHH` being unambiguous (a backslash the
 * client sent is `\x5C`, so the text `\xFF` and the byte FF read back differently).
 */
import t from 'tap'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { PassThrough } from 'node:stream'
import { createAccessLog, STATUS_DEFAULTS } from '../../src/index.js'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { backend, proxyServer, rawRequest } from '../helpers/servers.js'
import { appScript, fetchText, scrape, snapshot, statusRig } from '../status/harness.js'
import { root } from '../cli/run.js'

const doc = readFileSync(join(root, 'docs/reference/status.md'), 'utf8')

t.test('STATUS_DEFAULTS holds the documented path, metricsPath and allow', async (t) => {
  const row = (opt: string): string => (new RegExp('^\\| `' + opt + '` \\| `([^`]*)`', 'm').exec(doc) ?? [])[1] ?? ''
  t.equal(STATUS_DEFAULTS.path, row('path'))
  t.equal(STATUS_DEFAULTS.metricsPath, row('metricsPath'))
  t.same(STATUS_DEFAULTS.allow, ['127.0.0.0/8', '::1'])
  t.match(doc, /\| `allow` \| `\['127\.0\.0\.0\/8', '::1'\]` \|/, 'the table says the same')
})

/** The metrics table: name, type, label names (values in parentheses left out). */
function metricsTable (): Array<{ name: string, type: string, labels: string[] }> {
  const section = doc.slice(doc.indexOf('## Prometheus metrics'), doc.indexOf('## Access log'))
  const out: Array<{ name: string, type: string, labels: string[] }> = []
  for (const line of section.split('\n')) {
    const cells = line.split('|').map((c) => c.trim())
    if (cells.length < 5 || !cells[1].startsWith('`proxycore_')) continue
    const names = [...cells[1].matchAll(/`([^`]+)`/g)].map((m) => m[1])
    const type = cells[2].split(' ')[0]
    const labels = [...cells[3].replace(/\([^)]*\)/g, '').matchAll(/`([^`]+)`/g)].map((m) => m[1])
    for (const n of names) {
      const name = n.startsWith('_') ? names[0].replace(/_requests_total$/, '') + n : n
      out.push({ name, type, labels })
    }
  }
  return out
}

t.test('every metric of the table is in a real scrape, with its type and labels', async (t) => {
  guardLeaks(t, { timeoutMs: 15_000 })
  const table = metricsTable()
  t.ok(table.length >= 20, `${table.length} metrics in the table`)
  const dir = mkdtempSync(join(tmpdir(), 'pc-stat-claims-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  writeFileSync(join(dir, 'hi.sh'), '#!/bin/sh\nprintf "Content-Type: text/plain\\n\\nhi"\n', { mode: 0o755 })
  const be = await backend(t, (_req, res) => { res.end('ok') })
  const rig = await statusRig(t, {
    spawns: {
      app: { binPath: [process.execPath, appScript], socketName: '127.0.0.1:0', minProcs: 1, maxProcs: 1, stopTimeout: '2s' },
      cgi: { socketType: 'pipe' },
    },
    routes: [
      { name: 'fixed', match: { prefix: '/fixed/' }, protocol: 'http', backends: [be.address, '127.0.0.1:1'] },
      { name: 'dead', match: { prefix: '/dead/' }, protocol: 'http', backends: ['127.0.0.1:1'] },
      { name: 'app', match: { prefix: '/app/' }, protocol: 'http', spawn: 'app' },
      { name: 'cgi', match: { prefix: '/cgi/' }, protocol: 'cgi', spawn: 'cgi', docroot: dir, stripPrefix: true },
    ],
  })
  t.ok(await waitFor(async () => (await snapshot(rig)).spawns.find((s) => s.name === 'app')?.ready === 1, 15_000), 'app ready')
  // A success on each route, a failure (a route whose only backend refuses) so the failure series exist.
  for (let i = 0; i < 4; i++) await fetchText(`${rig.url}/fixed/${i}`)
  t.equal((await fetchText(`${rig.url}/dead/x`)).status, 502)
  t.equal((await fetchText(`${rig.url}/app/x`)).status, 200)
  t.equal((await fetchText(`${rig.url}/cgi/hi.sh`)).status, 200)
  const m = await scrape(rig)
  for (const { name, type, labels } of table) {
    t.equal(m.types.get(name), type, `${name}: # TYPE ${type}`)
    const sample = name.endsWith('_seconds') && type === 'histogram' ? `${name}_count` : name
    const keys = [...m.values.keys()].filter((k) => k === sample || k.startsWith(`${sample}{`))
    t.ok(keys.length > 0, `${name} has samples`)
    for (const k of keys) {
      const got = [...k.matchAll(/([a-z_]+)="/g)].map((x) => x[1])
      t.same(got, labels, `${k}: labels ${labels.join(',') || 'none'}`)
    }
  }
  t.equal(m.values.get('proxycore_request_failures_total{route="dead",code="ERR_CONNECT_REFUSED"}'), 1, 'the failure code is the stable ERR_*')
  t.equal(m.values.get('proxycore_responses_total{route="dead",status="502"}'), 1)
  // Event-fed spawn counters read 0 for every spawn before its first event (increase() sees it).
  for (const spawn of ['app', 'cgi']) {
    t.equal(m.values.get(`proxycore_spawn_restarts_total{spawn="${spawn}"}`), 0, `${spawn}: no restart yet, a 0 sample`)
    t.equal(m.values.get(`proxycore_spawn_exits_total{spawn="${spawn}",expected="false"}`), 0, `${spawn}: no crash yet, a 0 sample`)
    t.equal(m.values.get(`proxycore_spawn_exits_total{spawn="${spawn}",expected="true"}`), 0, `${spawn}: no stop yet, a 0 sample`)
  }
})

/** Reverse of the JSON log's text for a value: UTF-8 characters, `\xHH` back to its byte. */
function bytesOf (value: string): Buffer {
  const parts: Buffer[] = []
  let from = 0
  for (const m of value.matchAll(/\\x([0-9A-F]{2})/g)) {
    parts.push(Buffer.from(value.slice(from, m.index), 'utf8'), Buffer.from([parseInt(m[1], 16)]))
    from = (m.index ?? 0) + 4
  }
  parts.push(Buffer.from(value.slice(from), 'utf8'))
  return Buffer.concat(parts)
}

t.test('JSON access log: `\\xHH` is unambiguous, a backslash is `\\x5C`, the bytes can be recovered', async (t) => {
  guardLeaks(t)
  const be = await backend(t, (_req, res) => { res.end('ok') })
  const { proxy, port } = await proxyServer(t, { routes: [{ name: 'be', protocol: 'http', backends: [be.address] }] })
  const stream = new PassThrough()
  let text = ''
  stream.setEncoding('utf8').on('data', (c: string) => { text += c })
  const log = createAccessLog(proxy.events, { format: 'json', stream })
  t.teardown(() => log.close())
  const uas: Buffer[] = [
    Buffer.from('a\\xFFb'), // the four characters \xFF, sent as text
    Buffer.from([0x61, 0xff, 0x62]), // the byte FF
    Buffer.from('C:\\Windows\\é'),
    Buffer.concat([Buffer.from('\\x5C'), Buffer.from([0xc3])]),
  ]
  for (const [i, ua] of uas.entries()) {
    const req = Buffer.concat([Buffer.from(`GET /u/${i} HTTP/1.1\r\nHost: h\r\nConnection: close\r\nUser-Agent: `), ua, Buffer.from('\r\n\r\n')])
    t.match(await rawRequest(port, req), /^HTTP\/1\.1 200 /)
  }
  const rows = (): Array<{ url: string, userAgent: string }> => text.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as { url: string, userAgent: string })
  t.ok(await waitFor(() => rows().length >= uas.length, 10_000))
  const ua = (i: number): string => rows().find((r) => r.url === `/u/${i}`)?.userAgent ?? '?'
  t.equal(ua(0), 'a\\x5CxFFb', 'a backslash the client sent is \\x5C, as in combined')
  t.equal(ua(1), 'a\\xFFb', 'the byte FF is \\xFF')
  t.not(ua(0), ua(1), 'the text \\xFF and the byte FF read back differently')
  t.equal(ua(2), 'C:\\x5CWindows\\x5Cé')
  for (const [i, sent] of uas.entries()) t.same(bytesOf(ua(i)), sent, `bytes of user agent ${i} recovered`)
  // "JSON lines carry time, client, …, id", plus httpVersion / referer / userAgent when the request had them.
  const listed = (/JSON lines\s+carry ([^.]*)\./.exec(doc)?.[1] ?? '').replace(/`/g, '').split(/,\s*/)
  t.ok(listed.length >= 13, listed.join(' '))
  const keys = Object.keys(JSON.parse(text.split('\n')[0]) as object)
  t.same([...keys].sort(), [...listed, 'httpVersion', 'userAgent'].sort(), 'the documented keys, and only them')
  t.equal(log.written, uas.length, '`written` counts the lines')
  t.equal(log.dropped, 0)
  t.equal(log.error, null)
})
