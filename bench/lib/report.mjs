/** Medians, ratios, and the three renderings: console, docs/benchmarks.md, docs/benchmarks.svg. */
import { availableParallelism, cpus, release, totalmem } from 'node:os'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { run } from './proc.mjs'
import { which } from './peers.mjs'

export const RSS_TARGET_MIB = 80

const median = (xs) => {
  if (xs.length === 0) return NaN
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2
}

export function summarize (sc, targets, samples, sizes) {
  const rows = targets.map((t) => {
    const bySize = {}
    for (const n of sizes) {
      const ms = samples.get(t.id).get(n)
      const rps = ms.map((m) => m.rps)
      bySize[n] = {
        runs: ms.length,
        median: median(rps), min: Math.min(...rps), max: Math.max(...rps),
        p50: median(ms.map((m) => m.p50)), p99: median(ms.map((m) => m.p99)),
        rssMaxKiB: Math.max(0, ...ms.map((m) => m.rssKiB)),
        cpu: median(ms.map((m) => m.cpu)),
        errors: ms.reduce((a, m) => a + m.errors + m.non2xx, 0),
      }
    }
    return { id: t.id, label: t.label, direct: t.direct === true, bySize }
  })
  const pc = rows.find((r) => r.id === 'proxycore')
  const ratios = []
  if (pc) {
    for (const c of sc.comparisons) {
      const peer = rows.find((r) => r.id === c.peer)
      const bySize = {}
      for (const n of sizes) bySize[n] = peer && pc.bySize[n].runs && peer.bySize[n].runs ? pc.bySize[n].median / peer.bySize[n].median : null
      const vals = Object.values(bySize)
      const pass = c.target === undefined || vals.some((v) => v === null) ? null : vals.every((v) => v >= c.target)
      ratios.push({ peer: c.peer, label: c.label ?? peer?.label ?? c.peer, target: c.target ?? null, bySize, pass })
    }
    const rss = Math.max(...sizes.map((n) => pc.bySize[n].rssMaxKiB)) / 1024
    // A scenario with `rssTarget: null` has no memory target: the RSS is shown, not judged.
    const rssTarget = sc.rssTarget === undefined ? RSS_TARGET_MIB : sc.rssTarget
    ratios.push({ peer: 'rss', label: 'proxycore RSS under load (MiB, max)', target: rssTarget, rssMiB: rss, pass: rssTarget === null ? null : rss <= rssTarget })
  }
  return { rows, ratios }
}

const fmtInt = (x) => Number.isFinite(x) ? Math.round(x).toLocaleString('en-US').replace(/,/g, ' ') : '—'
const fmtR = (x) => x === null || !Number.isFinite(x) ? 'n/a' : `${x.toFixed(2)}×`
const sizeName = (n) => n >= 1024 ? `${n / 1024} KiB` : `${n} B`
const mark = (p) => p === null ? '' : p ? '✓' : '✗'

function rowCells (r, sizes, direct) {
  const cells = [r.id === 'proxycore' ? `**${r.label}**` : r.label]
  for (const n of sizes) {
    const s = r.bySize[n]
    cells.push(s.runs ? `${fmtInt(s.median)} (${fmtInt(s.min)}–${fmtInt(s.max)})` : 'failed')
  }
  for (const n of sizes) cells.push(Number.isFinite(r.bySize[n].p99) ? r.bySize[n].p99.toFixed(2) : '—')
  if (direct) cells.push(sizes.map((n) => direct.bySize[n].runs ? (r.bySize[n].median / direct.bySize[n].median).toFixed(2) : '—').join(' / '))
  cells.push((Math.max(...sizes.map((n) => r.bySize[n].rssMaxKiB)) / 1024).toFixed(1))
  cells.push(sizes.map((n) => `${(r.bySize[n].cpu * 100).toFixed(0)}`).join(' / '))
  cells.push(sizes.map((n) => r.bySize[n].median > 0 ? (r.bySize[n].cpu / r.bySize[n].median * 1e6).toFixed(0) : '—').join(' / '))
  const errs = sizes.reduce((a, n) => a + r.bySize[n].errors, 0)
  cells.push(String(errs))
  return cells
}

function table (head, rows, align) {
  return [`| ${head.join(' | ')} |`, `|${align.map((a) => a === 'r' ? '---:' : '---').join('|')}|`, ...rows.map((r) => `| ${r.join(' | ')} |`)].join('\n')
}

function scenarioMarkdown (sc, sizes) {
  const out = [`## ${sc.title}`, '']
  if (sc.note) out.push(sc.note, '')
  if (sc.skip) { out.push(`Skipped: ${sc.skip}.`, ''); return out.join('\n') }
  const direct = sc.rows.find((r) => r.direct)
  const head = ['server', ...sizes.map((n) => `req/s ${sizeName(n)} median (min–max)`), ...sizes.map((n) => `p99 ms ${sizeName(n)}`),
    ...(direct ? [`ratio to direct (${sizes.map(sizeName).join(' / ')})`] : []), 'RSS max MiB', `CPU % (${sizes.map(sizeName).join(' / ')})`, 'CPU µs/req', 'errors']
  out.push(table(head, sc.rows.map((r) => rowCells(r, sizes, direct)), ['l', ...sizes.map(() => 'r'), ...sizes.map(() => 'r'), ...(direct ? ['r'] : []), 'r', 'r', 'r', 'r']), '')
  if (sc.ratios.length > 0) {
    // A scenario without any target (static) says so in the target column.
    const judged = sc.ratios.some((q) => q.target !== null)
    const rrows = sc.ratios.map((q) => q.peer === 'rss'
      ? [q.label, ...sizes.map((_, i) => i === 0 ? `${q.rssMiB.toFixed(1)} MiB` : ''), q.target === null ? 'none' : `≤ ${q.target} MiB`, mark(q.pass)]
      : [`proxycore ÷ ${q.label}`, ...sizes.map((n) => fmtR(q.bySize[n])), q.target === null ? (judged ? '—' : 'none') : `≥ ${q.target}×`, mark(q.pass)])
    out.push(table(['ratio', ...sizes.map(sizeName), 'target', ''], rrows, ['l', ...sizes.map(() => 'r'), 'l', 'l']), '')
  }
  for (const s of sc.skipped ?? []) out.push(`- not measured: ${s.label} — ${s.reason}`)
  if ((sc.skipped ?? []).length > 0) out.push('')
  return out.join('\n')
}

export function renderMarkdown (rep) {
  const f = rep.facts
  const out = [
    '# Benchmarks',
    '',
    `<!-- Generated by \`npm run bench\` (bench/run.mjs). Do not edit by hand; re-run instead. -->`,
    '',
    `Run ${rep.date.slice(0, 16).replace('T', ' ')} UTC — proxycore ${f.proxycore}. Machine: ${f.nproc} CPUs (${f.cpu}), ${f.memGiB} GiB RAM, Linux ${f.kernel}, Node ${f.node}.`,
    '',
    `Peers: ${Object.entries(f.peers).map(([k, v]) => `${k} ${v}`).join(', ')}.`,
    '',
    `Method: every server is started by the bench itself on loopback, each in its own process (proxy CPU and RSS are its own process tree, backends excluded); nginx runs one worker, like the one Node process${rep.nodeFlags?.length ? `; every Node proxy (proxycore and the npm peers alike) runs with \`${Object.entries(rep.nodeEnv ?? {}).map(([k, v]) => `${k}=${v} `).join('')}node ${rep.nodeFlags.join(' ')}\`, the environment and V8 flags of \`proxycore serve\`` : ''}. Load: \`${rep.tool === 'wrk' ? `wrk -t1 -c${rep.connections} -d${rep.seconds}s --latency` : `autocannon -c ${rep.connections} -d ${rep.seconds}`}\`, keep-alive; 1 s warm-up per target and size; ${rep.runs} run(s) per target and size, targets interleaved and rotated each run; the table shows the median and the min–max spread. The load generator, the proxy and the backend share the same ${f.nproc} CPUs, so absolute numbers are low and noisy (runs of one invocation differ by 10–20 %); **only ratios taken in the same run compare**. Ratios are proxycore's median ÷ the peer's median. The Node floor (\`bench/servers/floor-*.mjs\`, HTTP, FastCGI and SCGI; in the spawn scenario the FastCGI one, in front of a php-cgi the bench starts with the same environment) is a hand-written node:http proxy with nothing but the wire protocol — no routing, no checks, no timeouts — given the same flags (for static files, \`floor-static.mjs\`: open, fstat and stream the file with Content-Type, Content-Length and Last-Modified, nothing more): the least a Node process can do per request, so proxycore ÷ floor is the price of proxycore's features and the floor's own distance to nginx or lighttpd is Node's. In the HTTP scenario a second floor, \`floor-undici.mjs\`, puts undici's Pool (as the HTTP adapter uses it: \`dispatch\` with a handler that only writes the head and the body through) behind the same node:http front: proxycore ÷ that floor is what proxycore adds on top of undici, and the undici floor ÷ the Node floor is undici's own cost. RSS is the max of VmRSS sampled every 100 ms during the runs, summed over the tree; a CGI script counts as a backend from its fork on (a child of lighttpd or of proxycore's fork-server helper that still has its parent's name is about to exec the script, and its pages are the parent's, shared copy-on-write). CPU % is the server's own process tree (utime+stime ÷ wall time; 100 % = one core) and CPU µs/req = CPU ÷ req/s: when the machine is shared, the server that gets fewer CPU slices serves fewer requests, so CPU per request is the steadier measure of its cost.`,
    '',
    ...(rep.notes ?? []).map((n) => `Note: ${n}\n`),
    '![requests per second by scenario](benchmarks.svg)',
    '',
  ]
  const summary = []
  for (const sc of rep.scenarios) for (const q of sc.ratios ?? []) {
    if (q.target === null) continue
    summary.push([sc.id, q.peer === 'rss' ? 'RSS under load' : `÷ ${q.label}`,
      q.peer === 'rss' ? `${q.rssMiB.toFixed(1)} MiB` : rep.sizes.map((n) => fmtR(q.bySize[n])).join(' / '),
      q.peer === 'rss' ? `≤ ${q.target} MiB` : `≥ ${q.target}×`, mark(q.pass) || 'n/a'])
  }
  if (summary.length > 0) {
    out.push('## Targets', '', table(['scenario', 'proxycore', `measured (${rep.sizes.map(sizeName).join(' / ')})`, 'target', ''], summary, ['l', 'l', 'r', 'l', 'l']), '')
  }
  for (const sc of rep.scenarios) out.push(scenarioMarkdown(sc, rep.sizes))
  out.push(renderBigSection(rep.big))
  out.push('## Reproduce', '', '```sh', 'scripts/install-peers.sh   # nginx-light lighttpd php-fpm php-cgi fcgiwrap uwsgi wrk', `npm run bench -- --runs ${rep.runs}`,
    'npm run bench -- --only big   # 1 GiB up and down through every adapter; rewrites only the large-body section',
    'npm run bench -- --profile   # proxycore HTTP path under --cpu-prof, top self-time functions',
    'npm run bench -- --survivors   # what each request leaves for the old generation, by allocation site',
    'npm run bench -- --allocations   # what each request allocates, by allocation site', '```', '')
  return out.join('\n')
}

// --- large bodies (--big / --only big) ----------------------------------------------------------

export const BIG_SECTION_HEADING = '## Memory: large bodies'

/** Reports before every adapter took part stored `big` as a bare array of HTTP rows. */
function bigOf (big) {
  if (!big) return null
  if (Array.isArray(big)) return { rows: big.map((b) => ({ backend: b.adapter, pattern: 'gen', ...b })), bytes: big[0]?.bytes, upload: 'chunked', targetMiB: 32 }
  return big
}
const growthMiB = (b) => (b.rssMaxKiB - b.rssBeforeKiB) / 1024
const mibps = (b) => b.seconds > 0 ? (b.bytes / 1048576 / b.seconds).toFixed(0) : '—'
const bigPass = (b, target = 32) => b.ok === true && growthMiB(b) < target
const cell = (s) => String(s).replace(/\|/g, '\\|').replace(/\s+/g, ' ')
const sizeText = (n) => n >= 1024 ** 3 && n % 1024 ** 3 === 0 ? `${n / 1024 ** 3} GiB` : n >= 1048576 && n % 1048576 === 0 ? `${n / 1048576} MiB` : `${fmtInt(n)} B`

/** The "Memory: large bodies" section of docs/benchmarks.md (a full run and `--only big` both write it). */
export function renderBigSection (raw) {
  const big = bigOf(raw)
  const out = [BIG_SECTION_HEADING, '']
  if (!big) {
    out.push('Not part of this run (`npm run bench -- --only big`: 1 GiB upload and download through every adapter, sha256 checked end to end, proxy RSS growth measured).', '')
    return out.join('\n')
  }
  const target = big.targetMiB ?? 32
  const f = big.facts
  out.push(`${big.separate || f ? `Run ${String(big.date ?? '').slice(0, 16).replace('T', ' ')} UTC${f ? ` — proxycore ${f.proxycore}, ${f.nproc} CPUs, Node ${f.node}` : ''}${big.separate ? ' (a separate `npm run bench -- --only big`)' : ''}. ` : ''}` +
    `One ${sizeText(big.bytes)} upload and one ${sizeText(big.bytes)} download per backend, each through a fresh proxycore process (after a warm-up of small bodies, sha256-checked too), one request at a time. ` +
    `Uploads ${big.upload === 'chunked' ? 'are sent chunked' : 'carry Content-Length: HTTP streams the body from the client socket to the backend, while FastCGI, SCGI and CGI read it whole first (`requestBuffering`, their default: memory up to 64 KiB, then an unlinked temp file) and then send it, so their upload time includes the disk'}; the client sends the lib/gen.mjs stream and the backend answers with the sha256 of what it read. ` +
    'Downloads are a stream the backend generates (the lib/gen.mjs stream, reproduced in PHP and Python, or `seq 1 inf | head -c N` for the shell script) whose sha256 the bench computes itself. ' +
    `RSS is proxycore's process tree (CGI scripts it forks excluded), sampled every 50 ms; "before" is the median of 10 samples 100 ms apart after the warm-up, once the JIT has settled. MiB/s is the whole exchange, client and backend on the same CPUs. Target: sha256 intact and RSS growth < ${target} MiB.`, '')
  out.push(table(['adapter', 'backend', 'direction', 'sha256', 'seconds', 'MiB/s', 'RSS before MiB', 'RSS max MiB', 'growth MiB', 'target'],
    big.rows.map((b) => b.skip
      ? [b.adapter, cell(b.label ?? b.backend), b.direction, `not measured: ${cell(b.skip)}`, '—', '—', '—', '—', '—', 'n/a']
      : [b.adapter, cell(b.label ?? b.backend), `${b.direction}${b.direction === 'download' && b.pattern === 'seq' ? ' (seq)' : ''}`, b.ok ? 'intact' : `**${cell(b.error ?? 'MISMATCH')}**`,
          b.seconds.toFixed(1), mibps(b), (b.rssBeforeKiB / 1024).toFixed(1), (b.rssMaxKiB / 1024).toFixed(1), growthMiB(b).toFixed(1), `< ${target} MiB ${mark(bigPass(b, target))}`]),
    ['l', 'l', 'l', 'l', 'r', 'r', 'r', 'r', 'r', 'l']), '')
  const rc = big.recycle
  if (rc?.skip) out.push(`**Recycling under load:** not measured: ${cell(rc.skip)}.`, '')
  else if (rc) {
    out.push(`**Recycling under load** (bench/lib/recycle.mjs): proxycore spawning php-cgi, ${rc.procs} slots with \`maxRequests: ${rc.maxRequests}\`, ${rc.connections} keep-alive clients for ${rc.seconds} s. ` +
      'A failure is anything but a 200 carrying the pid PHP reports; the processes are counted from those pids. Target: 0 failures.', '')
    out.push(table(['requests', 'php-cgi processes that served', 'failed', 'RSS max MiB', 'target'],
      [[fmtInt(rc.requests), String(rc.processes), String(rc.failed), (rc.rssMaxKiB / 1024).toFixed(1), `0 failures ${mark(rc.failed === 0 && rc.requests > 0)}`]],
      ['r', 'r', 'r', 'r', 'l']), '')
  }
  return out.join('\n')
}

/** `md` (a docs/benchmarks.md) with its large-body section replaced by one rendered from `big`. */
export function spliceBigSection (md, big) {
  const section = renderBigSection(big)
  const at = md.indexOf(`\n${BIG_SECTION_HEADING}`)
  if (at >= 0) {
    const end = md.indexOf('\n## ', at + 1)
    return `${md.slice(0, at + 1)}${section}${end < 0 ? '' : `\n${md.slice(end + 1)}`}`
  }
  const repro = md.indexOf('\n## Reproduce')
  if (repro >= 0) return `${md.slice(0, repro + 1)}${section}\n${md.slice(repro + 1)}`
  return `${md.trimEnd()}\n\n${section}`
}

export function renderConsole (rep) {
  const out = []
  for (const sc of rep.scenarios) out.push(scenarioMarkdown(sc, rep.sizes))
  const big = bigOf(rep.big)
  if (big && !big.separate) {
    out.push('## Memory: large bodies')
    for (const b of big.rows) {
      out.push(b.skip ? `${b.adapter} (${b.backend}) ${b.direction}: not measured — ${b.skip}`
        : `${b.adapter} (${b.backend}) ${b.direction} ${fmtInt(b.bytes)} B: sha256 ${b.ok ? 'intact' : b.error ?? 'MISMATCH'}, ${b.seconds.toFixed(1)} s, ${mibps(b)} MiB/s, RSS ${(b.rssBeforeKiB / 1024).toFixed(1)} → max ${(b.rssMaxKiB / 1024).toFixed(1)} MiB (growth ${growthMiB(b).toFixed(1)} MiB) ${mark(bigPass(b, big.targetMiB))}`)
    }
  }
  return out.join('\n')
}

const esc = (s) => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')

/** Hand-built horizontal bar chart: per scenario, one pair of bars (100 B, 64 KiB) per server. */
export function renderSvg (rep) {
  const W = 900
  const labelW = 330
  const barW = W - labelW - 110
  const colors = ['#4e79a7', '#f28e2b']
  const parts = []
  let y = 40
  for (const sc of rep.scenarios) {
    if (sc.skip || sc.rows.length === 0) continue
    parts.push(`<text x="10" y="${y}" font-weight="bold" font-size="14">${esc(sc.title)}</text>`)
    y += 10
    const max = Math.max(1, ...sc.rows.flatMap((r) => rep.sizes.map((n) => r.bySize[n].median || 0)))
    for (const r of sc.rows) {
      const bold = r.id === 'proxycore' ? ' font-weight="bold"' : ''
      parts.push(`<text x="${labelW - 8}" y="${y + 15}" text-anchor="end" font-size="12"${bold}>${esc(r.label)}</text>`)
      rep.sizes.forEach((n, i) => {
        const v = r.bySize[n].median || 0
        const w = Math.max(1, Math.round(v / max * barW))
        parts.push(`<rect x="${labelW}" y="${y + 2 + i * 11}" width="${w}" height="10" fill="${colors[i % 2]}"/>`)
        parts.push(`<text x="${labelW + w + 4}" y="${y + 11 + i * 11}" font-size="10">${fmtInt(v)}</text>`)
      })
      y += 26
    }
    y += 22
  }
  const legend = rep.sizes.map((n, i) => `<rect x="${labelW + i * 110}" y="12" width="10" height="10" fill="${colors[i % 2]}"/><text x="${labelW + 14 + i * 110}" y="21" font-size="12">${sizeName(n)} req/s</text>`).join('')
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${y}" viewBox="0 0 ${W} ${y}" font-family="sans-serif">
<rect width="100%" height="100%" fill="#fff"/>
<text x="10" y="21" font-size="12" fill="#555">median req/s, ${rep.runs} run(s), ${esc(rep.date.slice(0, 10))}; bars scaled per scenario</text>
${legend}
${parts.join('\n')}
</svg>
`
}

async function version (cmd, args, re = /([\d]+\.[\d.]+[\w.-]*)/) {
  if (!cmd) return null
  const r = await run(cmd, args, { timeoutMs: 5000 })
  const m = re.exec(`${r.stdout}\n${r.stderr}`)
  return m ? m[1] : null
}

function pkgVersion (repo, name) {
  try { return JSON.parse(readFileSync(join(repo, 'node_modules', name, 'package.json'), 'utf8')).version } catch { return null }
}

export async function machineFacts (repo, tool) {
  const peers = {
    nginx: await version(which('nginx'), ['-v']),
    lighttpd: await version(which('lighttpd'), ['-v']),
    'php-fpm': await version(which('phpFpm'), ['-v']),
    'php-cgi': await version(which('phpCgi'), ['-v']),
    uWSGI: await version(which('uwsgi'), ['--version']),
    fcgiwrap: await version(which('fcgiwrap'), ['-h'], /version ([\d.]+)/),
    wrk: tool.name === 'wrk' ? await version(tool.path, ['-v'], /wrk (\S+)/) : null,
    'http-proxy': pkgVersion(repo, 'http-proxy'),
    'http-proxy-3': pkgVersion(repo, 'http-proxy-3'),
    'fastcgi-client': pkgVersion(repo, 'fastcgi-client'),
    undici: pkgVersion(repo, 'undici'),
  }
  for (const k of Object.keys(peers)) if (peers[k] === null) delete peers[k]
  let commit = ''
  const g = await run('git', ['rev-parse', '--short', 'HEAD'], { cwd: repo, timeoutMs: 5000 })
  if (g.code === 0) commit = ` (${g.stdout.trim()})`
  return {
    nproc: availableParallelism(),
    cpu: cpus()[0]?.model?.replace(/\s+/g, ' ').trim() ?? '?',
    memGiB: (totalmem() / 1024 ** 3).toFixed(1),
    kernel: release(),
    node: process.version,
    proxycore: `${pkgVersion(repo, '..') ?? JSON.parse(readFileSync(join(repo, 'package.json'), 'utf8')).version}${commit}`,
    peers,
  }
}
