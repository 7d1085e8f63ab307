/**
 * The status page's body, rendered from one snapshot.
 *
 * `renderStatusBody` runs twice: on the server for the first paint (the page works without
 * JavaScript), and in the browser for every live update — the page ships it as source text
 * (`renderStatusBody.toString()`). So it must stay self-contained: no imports, no closures over
 * module scope, helpers declared inside. Every value from the snapshot goes through `esc()`;
 * nothing reaches the HTML unescaped (backend error strings and stderr lines are untrusted).
 */
import type { StatusSnapshot } from './model.js'

export function renderStatusBody (s: StatusSnapshot): string {
  const esc = (v: unknown): string => String(v ?? '').replace(/[&<>"']/g, (c) => '&#' + c.charCodeAt(0) + ';')
  const TONE: Record<string, string> = {
    up: 'ok', ready: 'ok', running: 'ok',
    starting: 'warn', waiting: 'warn', backoff: 'warn', disabled: 'warn',
    draining: 'info', stopping: 'info', idle: 'info', standby: 'info', held: 'warn',
    failed: 'bad', down: 'bad', exited: 'mute', stopped: 'mute',
  }
  const badge = (state: string): string => '<span class="badge ' + (TONE[state] ?? 'mute') + '">' + esc(state.toUpperCase()) + '</span>'
  const num = (n: number | null): string => (n === null ? '–' : esc(n.toLocaleString('en-US')))
  const ms = (n: number | null): string => (n === null ? '–' : n >= 1000 ? esc(n / 1000) + ' s' : esc(n) + ' ms')
  const dur = (sec: number): string => {
    const t = Math.floor(sec)
    if (t < 60) return t + 's'
    if (t < 3600) return Math.floor(t / 60) + 'm ' + (t % 60) + 's'
    if (t < 86400) return Math.floor(t / 3600) + 'h ' + Math.floor((t % 3600) / 60) + 'm'
    return Math.floor(t / 86400) + 'd ' + Math.floor((t % 86400) / 3600) + 'h'
  }
  const bytes = (n: number | null): string => {
    if (n === null) return '–'
    const units = ['B', 'KiB', 'MiB', 'GiB']
    let v = n
    let i = 0
    while (v >= 1024 && i < units.length - 1) { v /= 1024; i++ }
    return esc((i === 0 ? v : v.toFixed(1)) + ' ' + units[i])
  }
  const avail = (p: number | null, a: number, c: number): string => {
    const tone = p === null ? 'mute' : p >= 99.95 ? 'ok' : p > 0 ? 'warn' : 'bad'
    const width = p === null ? 0 : Math.max(0, Math.min(100, p))
    return '<div class="avail ' + tone + '"><div class="bar"><i style="width:' + width + '%"></i></div>' +
      '<span>' + (p === null ? '–' : esc(p) + '%') + ' <small>' + esc(a) + '/' + esc(c) + '</small></span></div>'
  }
  const exit = (e: { code: number | null, signal: string | null, at: string } | null): string => {
    if (e === null) return '–'
    const what = e.signal !== null ? esc(e.signal) : 'code ' + esc(e.code)
    return '<span title="' + esc(e.at) + '">' + what + '</span>'
  }

  let html = ''
  // Where proxycore listens (absent for an embedder's proxy, which has no listeners of its own).
  if (s.listening !== undefined && s.listening.length > 0) {
    html += '<p class="listening">listening on ' + s.listening.map((a) => '<code>' + esc(a) + '</code>').join(' · ') + '</p>'
  }
  html += '<section class="cards">'
  html += '<div class="card"><b>' + num(s.inflight) + '</b><span>in flight</span></div>'
  html += '<div class="card"><b>' + num(s.routes.length) + '</b><span>routes</span></div>'
  html += '<div class="card"><b>' + num(s.routes.reduce((n, r) => n + r.requests, 0)) + '</b><span>requests</span></div>'
  html += '<div class="card"><b>' + num(s.spawns.length) + '</b><span>spawns</span></div>'
  const failed = s.spawns.filter((x) => x.failed).length
  html += '<div class="card' + (failed > 0 ? ' alarm' : '') + '"><b>' + num(failed) + '</b><span>failed</span></div>'
  html += '</section>'

  html += '<h2>Routes</h2><table class="grid"><thead><tr><th>Route</th><th>Protocol</th><th>Avail</th>' +
    '<th class="n">Active</th><th class="n">Queued</th><th class="n">Requests</th><th class="n">Errors</th>' +
    '<th class="n">Dropped</th><th class="n">p50</th><th class="n">p99</th></tr></thead><tbody>'
  for (const r of s.routes) {
    html += '<tr class="route"><td><b>' + esc(r.name) + '</b>' + (r.spawn !== null ? ' <small>spawn ' + esc(r.spawn) + '</small>' : '') + '</td>' +
      '<td>' + esc(r.protocol) + '</td><td>' + avail(r.availPercent, r.available, r.capacity) + '</td>' +
      '<td class="n">' + num(r.active) + (r.maxConcurrent > 0 ? '<small>/' + esc(r.maxConcurrent) + '</small>' : '') + '</td>' +
      '<td class="n">' + num(r.queued) + '</td><td class="n">' + num(r.requests) + '</td>' +
      '<td class="n' + (r.errors > 0 ? ' hot' : '') + '">' + num(r.errors) + '</td>' +
      '<td class="n' + (r.dropped > 0 ? ' hot' : '') + '">' + num(r.dropped) + '</td>' +
      '<td class="n">' + ms(r.latency.p50Ms) + '</td><td class="n">' + ms(r.latency.p99Ms) + '</td></tr>'
    if (r.backends.length > 0) {
      html += '<tr class="sub"><td colspan="10"><table class="inner"><thead><tr><th>Backend</th><th>State</th>' +
        '<th class="n">In flight</th><th class="n">Requests</th><th class="n">Failures</th><th>Last error</th></tr></thead><tbody>'
      for (const b of r.backends) {
        html += '<tr><td><code>' + esc(b.id) + '</code>' + (b.source !== b.id ? ' <small>' + esc(b.source) + '</small>' : '') + '</td>' +
          '<td>' + badge(b.state) + '</td><td class="n">' + num(b.inflight) + '</td><td class="n">' + num(b.requests) + '</td>' +
          '<td class="n' + (b.failures > 0 ? ' hot' : '') + '">' + num(b.failures) + '</td>' +
          '<td class="err">' + (b.lastError === null ? '' : esc(b.lastError)) + '</td></tr>'
      }
      html += '</tbody></table></td></tr>'
    }
  }
  if (s.routes.length === 0) html += '<tr><td colspan="10" class="empty">No routes.</td></tr>'
  html += '</tbody></table>'

  if (s.spawns.length > 0) html += '<h2>Spawns</h2>'
  for (const sp of s.spawns) {
    html += '<section class="spawn' + (sp.failed ? ' failed' : '') + '"><header><h3>' + esc(sp.name) + '</h3>' + badge(sp.state) +
      (sp.launcher === null
        ? '<span class="meta">alive <b>' + num(sp.alive) + '</b> · ready <b>' + num(sp.ready) + '</b> · idle <b>' + num(sp.idle) +
          '</b>' + (sp.standby > 0 ? ' · standby <b>' + num(sp.standby) + '</b>' : '') + (sp.held > 0 ? ' · held <b>' + num(sp.held) + '</b>' : '') +
          ' · max <b>' + num(sp.max) + '</b></span>' +
          // The denominator of availPercent (model.ts spawnCapacity): the processes wanted.
          avail(sp.availPercent, sp.ready, Math.max(sp.wanted === null ? sp.alive - sp.standby : sp.wanted, sp.ready, 1))
        // A pipe (CGI) spawn: a child per request, started by a fork server or Node's spawn().
        : '<span class="meta">CGI children <b>' + num(sp.pipeChildren) + '</b> · started by <b>' +
          (sp.forkServer === null ? 'Node\'s spawn()' : esc(sp.forkServer) + ' fork server') + '</b></span>') + '</header>'
    if (sp.reason !== null) html += '<p class="reason">' + esc(sp.reason) + '</p>'
    // Why it is down, when its crashed process is gone (reaped): in backoff, FAILED, or while a
    // restart is pending or a restarted process boots.
    const next = sp.pendingRestarts.length > 0 ? sp.pendingRestarts[0] : null
    if (sp.lastCrash !== null && (sp.state !== 'running' || next !== null)) {
      const c = sp.lastCrash
      html += '<p class="crash">last crash: <code>' + esc(c.id) + '</code>' + (c.pid !== null ? ' (pid ' + esc(c.pid) + ')' : '') +
        (c.error !== null ? ' did not start: ' + esc(c.error) : c.signal !== null ? ' killed by ' + esc(c.signal) : ' exited with code ' + esc(c.code)) +
        ' at <time datetime="' + esc(c.at) + '">' + esc(c.at) + '</time> · ' + num(sp.restarts) + (sp.restarts === 1 ? ' restart' : ' restarts') +
        (next !== null ? ' · next start in ' + esc(next.inSeconds) + ' s (<time datetime="' + esc(next.at) + '">' + esc(next.at) + '</time>)' : '') + '</p>'
    }
    if (sp.processes.length > 0 || sp.pendingRestarts.length > 0) {
      html += '<table class="grid"><thead><tr><th class="n">PID</th><th>State</th><th>Address</th><th class="n">Requests</th>' +
        '<th class="n">In flight</th><th class="n">Uptime</th><th class="n">Restarts</th><th>Last exit</th>' +
        '<th class="n">CPU</th><th class="n">RSS</th><th class="n">uid:gid</th></tr></thead><tbody>'
      for (const p of sp.processes) {
        html += '<tr><td class="n"><code>' + esc(p.pid ?? '–') + '</code></td><td>' + badge(p.state) + '</td>' +
          '<td><code>' + esc(p.address) + '</code></td>' +
          '<td class="n">' + num(p.requests) + (p.maxRequests !== null && p.maxRequests > 0 ? '<small>/' + esc(p.maxRequests) + '</small>' : '') + '</td>' +
          '<td class="n">' + num(p.inflight) + '</td><td class="n">' + esc(dur(p.uptimeSeconds)) + '</td>' +
          '<td class="n' + (p.restarts > 0 ? ' hot' : '') + '">' + num(p.restarts) + '</td><td>' + exit(p.lastExit) + '</td>' +
          '<td class="n">' + (p.cpuSeconds === null ? '–' : esc(p.cpuSeconds.toFixed(2)) + ' s') + '</td>' +
          '<td class="n">' + bytes(p.rssBytes) + '</td><td class="n">' + (p.uid === null ? '–' : esc(p.uid) + ':' + esc(p.gid)) + '</td></tr>'
      }
      // A slot whose process crashed and was reaped: a row of its own until the restart is due.
      for (const r of sp.pendingRestarts) {
        html += '<tr class="pending"><td class="n">–</td><td>' + badge('backoff') + '</td><td><code>' + esc(r.address) + '</code>' +
          (r.kind === 'successor' ? ' <small>recycle successor</small>' : '') + '</td>' +
          '<td class="n" colspan="3">start in ' + esc(r.inSeconds) + ' s</td>' +
          '<td class="n hot">' + num(r.restarts) + '</td><td>' + exit(r.lastExit) + '</td><td colspan="3"></td></tr>'
      }
      html += '</tbody></table>'
    }
    if (sp.stderrTail.length > 0) {
      html += '<details' + (sp.failed ? ' open' : '') + '><summary>stderr (last ' + esc(sp.stderrTail.length) + ' lines)</summary><pre>' +
        sp.stderrTail.map(esc).join('\n') + '</pre></details>'
    }
    html += '</section>'
  }
  return html
}
