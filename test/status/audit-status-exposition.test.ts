/**
 * The Prometheus text (format 0.0.4) checked by the format's rules, not by a loose regex: with
 * route names and a backend address holding `"`, `\`, a newline and `<script>`, real spawned
 * processes (one crash-looping into FAILED) and mixed traffic, every line parses; every family has
 * exactly one HELP and one TYPE, before its samples, and its samples are contiguous; no series
 * appears twice; label values decode back to the names configured; histograms are cumulative with
 * `+Inf` equal to `_count`. The page and the JSON of the same proxy keep those names inert.
 */
import t from 'tap'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { backend, get } from '../helpers/servers.js'
import { appScript, fetchText, snapshot, statusRig } from './harness.js'

interface Sample { name: string, labels: Array<[string, string]>, value: number }

/** One sample line by the 0.0.4 grammar; throws on anything else. */
function parseSample (line: string): Sample {
  const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)/.exec(line)
  if (m === null) throw new Error(`bad metric name: ${JSON.stringify(line)}`)
  const name = m[1]
  let i = name.length
  const labels: Array<[string, string]> = []
  if (line[i] === '{') {
    i++
    while (line[i] !== '}') {
      const ln = /^[a-zA-Z_][a-zA-Z0-9_]*/.exec(line.slice(i))
      if (ln === null || line[i + ln[0].length] !== '=' || line[i + ln[0].length + 1] !== '"') throw new Error(`bad label at ${i}: ${JSON.stringify(line)}`)
      i += ln[0].length + 2
      let v = ''
      for (;;) {
        const c = line[i++]
        if (c === undefined) throw new Error(`unterminated label value: ${JSON.stringify(line)}`)
        if (c === '"') break
        if (c === '\\') {
          const e = line[i++]
          if (e === 'n') v += '\n'
          else if (e === '\\' || e === '"') v += e
          else throw new Error(`bad escape \\${e}: ${JSON.stringify(line)}`)
        } else v += c
      }
      labels.push([ln[0], v])
      if (line[i] === ',') i++
      else if (line[i] !== '}') throw new Error(`expected , or } at ${i}: ${JSON.stringify(line)}`)
    }
    i++
  }
  const rest = /^ (\S+)$/.exec(line.slice(i))
  if (rest === null) throw new Error(`bad value: ${JSON.stringify(line)}`)
  const value = rest[1] === '+Inf' ? Infinity : rest[1] === '-Inf' ? -Infinity : Number(rest[1])
  if (Number.isNaN(value) && rest[1] !== 'NaN') throw new Error(`bad number: ${JSON.stringify(line)}`)
  return { name, labels, value }
}

/** Problems found in an exposition; empty when it follows the rules. */
function expositionProblems (text: string): { problems: string[], samples: Sample[] } {
  const problems: string[] = []
  const samples: Sample[] = []
  const help = new Map<string, number>()
  const type = new Map<string, string>()
  const closed = new Set<string>()
  const series = new Set<string>()
  let current: string | null = null
  const familyOf = (n: string): string => {
    for (const suffix of ['_bucket', '_sum', '_count']) {
      const base = n.slice(0, -suffix.length)
      if (n.endsWith(suffix) && type.get(base) === 'histogram') return base
    }
    return n
  }
  if (!text.endsWith('\n')) problems.push('no final newline')
  for (const line of text.split('\n').slice(0, -1)) {
    const meta = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$/.exec(line)
    if (meta !== null) {
      const [, kind, fam, rest] = meta
      if (kind === 'HELP') {
        help.set(fam, (help.get(fam) ?? 0) + 1)
        if (/\\[^n\\]/.test(rest.replace(/\\\\/g, ''))) problems.push(`bad escape in HELP of ${fam}`)
      } else {
        if (type.has(fam)) problems.push(`TYPE of ${fam} twice`)
        if (!['counter', 'gauge', 'histogram', 'summary', 'untyped'].includes(rest)) problems.push(`TYPE ${rest} of ${fam}`)
        type.set(fam, rest)
      }
      if (current !== fam) { if (current !== null) closed.add(current); if (closed.has(fam)) problems.push(`${fam} not contiguous`); current = fam }
      continue
    }
    if (line === '') continue // the format ignores empty lines
    if (line.startsWith('#')) { problems.push(`unexpected line ${JSON.stringify(line)}`); continue }
    let s: Sample
    try { s = parseSample(line) } catch (err) { problems.push((err as Error).message); continue }
    samples.push(s)
    const fam = familyOf(s.name)
    if (!type.has(fam)) problems.push(`sample of ${fam} before its TYPE`)
    if (fam !== current) problems.push(`sample of ${fam} outside its block`)
    const names = s.labels.map(([k]) => k)
    if (new Set(names).size !== names.length) problems.push(`repeated label in ${line}`)
    const key = `${s.name}${JSON.stringify([...s.labels].sort(([a], [b]) => (a < b ? -1 : 1)))}`
    if (series.has(key)) problems.push(`duplicate series ${line}`)
    series.add(key)
  }
  for (const [fam, n] of help) if (n !== 1) problems.push(`HELP of ${fam} ${n} times`)
  for (const fam of type.keys()) if (help.get(fam) !== 1) problems.push(`no HELP for ${fam}`)
  // Histograms: cumulative buckets per series, +Inf = _count.
  for (const [fam, ty] of type) {
    if (ty !== 'histogram') continue
    const groups = new Map<string, Array<[number, number]>>()
    for (const s of samples) {
      if (s.name !== `${fam}_bucket`) continue
      const le = s.labels.find(([k]) => k === 'le')?.[1]
      const rest = JSON.stringify(s.labels.filter(([k]) => k !== 'le'))
      groups.set(rest, [...(groups.get(rest) ?? []), [le === '+Inf' ? Infinity : Number(le), s.value]])
    }
    for (const [rest, buckets] of groups) {
      const sorted = [...buckets].sort((a, b) => a[0] - b[0])
      if (sorted.at(-1)?.[0] !== Infinity) problems.push(`${fam}${rest}: no +Inf bucket`)
      for (let i = 1; i < sorted.length; i++) if (sorted[i][1] < sorted[i - 1][1]) problems.push(`${fam}${rest}: buckets not cumulative`)
      const count = samples.find((s) => s.name === `${fam}_count` && JSON.stringify(s.labels) === rest)
      if (count?.value !== sorted.at(-1)?.[1]) problems.push(`${fam}${rest}: _count ${count?.value} != +Inf ${sorted.at(-1)?.[1]}`)
    }
  }
  return { problems, samples }
}

t.test('the exposition follows the text format with hostile names, spawns, a FAILED spawn and mixed traffic', async (t) => {
  guardLeaks(t, { timeoutMs: 10_000 })
  const be = await backend(t, (req, res) => {
    if (req.url?.includes('boom')) { req.socket.destroy(); return }
    res.end('ok')
  })
  const hostile = 'api "q" \\ x\n<script>alert(1)</script>'
  const sockName = 'unix:/nonexistent/a"b\\c\nd<i>.sock'
  const node = process.execPath
  const rig = await statusRig(t, {
    spawns: {
      app: { binPath: [node, appScript], socketName: '127.0.0.1:0', minProcs: 2, maxProcs: 2, idleTimeout: 0, stopTimeout: '2s' },
      broken: { binPath: [node, appScript, 'fail'], socketName: '127.0.0.1:0', restart: { initialDelay: '100ms', maxDelay: '200ms', maxStarts: 2, window: '30s' } },
    },
    routes: [
      { name: hostile, match: { prefix: '/h/' }, protocol: 'http', backends: [be.address] },
      { name: 'sock', match: { prefix: '/s/' }, protocol: 'http', backends: [sockName] },
      { name: 'app', match: { prefix: '/app/' }, protocol: 'http', spawn: 'app' },
      { name: 'broken', match: { prefix: '/broken/' }, protocol: 'http', spawn: 'broken' },
    ],
  })
  t.ok(await waitFor(async () => {
    const s = await snapshot(rig)
    return s.spawns.find((x) => x.name === 'app')?.ready === 2 && s.spawns.find((x) => x.name === 'broken')?.failed === true
  }, 20_000), 'app ready x2, broken FAILED')
  const statuses: number[] = []
  for (let i = 0; i < 12; i++) {
    for (const p of ['/h/ok', '/h/boom', '/s/x', '/app/x', '/broken/x', '/nowhere']) statuses.push((await get(`${rig.url}${p}`)).status)
  }
  t.same([...new Set(statuses)].sort(), [200, 404, 502, 503].filter((s) => statuses.includes(s)), 'mixed outcomes')

  for (let round = 0; round < 2; round++) {
    const r = await fetchText(`${rig.url}/metrics`)
    t.equal(r.status, 200)
    const { problems, samples } = expositionProblems(r.body)
    t.same(problems, [], `scrape ${round + 1}: no rule broken`)
    const routes = new Set(samples.flatMap((s) => s.labels.filter(([k]) => k === 'route').map(([, v]) => v)))
    t.ok(routes.has(hostile), 'the hostile route name decodes back exactly')
    const backends = new Set(samples.flatMap((s) => s.labels.filter(([k]) => k === 'backend').map(([, v]) => v)))
    t.ok(backends.has(sockName), 'the hostile socket address decodes back exactly')
    t.ok(samples.some((s) => s.name === 'proxycore_spawn_state' && s.labels.some(([k, v]) => k === 'state' && v === 'failed') && s.value === 1), 'FAILED spawn in the exposition')
  }

  const page = await fetchText(`${rig.url}/server-status`)
  const body = page.body.replace(/<script nonce="[^"]+">[\s\S]*?<\/script>/, '')
  t.notMatch(body, /<script/i, 'no script element but the page\'s own')
  t.notOk(body.includes('d<i>.sock'), 'the socket address is not markup')
  t.ok(body.includes('a&#34;b\\c\nd&#60;i&#62;.sock'), 'the socket address escaped')
  t.match(body, /api &#34;q&#34; \\ x\n&#60;script&#62;alert\(1\)&#60;\/script&#62;/, 'the route name escaped')
  const json = await snapshot(rig)
  t.ok(json.routes.some((r) => r.name === hostile) && json.routes.some((r) => r.backends.some((b) => b.id === sockName)), 'JSON keeps the names exactly')
})
