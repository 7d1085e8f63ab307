/**
 * The HTML status page: one self-contained document (inline CSS and script, no external assets,
 * so it works on an air-gapped host and leaks no referrer). The first paint is server-rendered;
 * the script then opens `<path>/live` and re-renders from each pushed snapshot with the same
 * `renderStatusBody` the server used. A strict CSP (a per-response script nonce) keeps anything
 * that slips into the data from running; inline styles stay allowed for the availability bars.
 */
import { randomBytes } from 'node:crypto'
import type { StatusSnapshot } from './model.js'
import { renderStatusBody } from './render.js'

const CSS = `
:root{--bg:#f6f7f9;--fg:#1d2330;--mute:#6b7385;--line:#e2e5ea;--card:#fff;--ok:#1f9d55;--warn:#c77c02;--bad:#d3302f;--info:#3b6fd8}
*{box-sizing:border-box}body{margin:0;background:var(--bg);color:var(--fg);font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
header.top{display:flex;align-items:center;gap:16px;padding:14px 28px;background:#1d2330;color:#fff}
header.top h1{font-size:18px;margin:0;font-weight:600}header.top .sw{color:#aab2c5;font-size:13px}
#live{margin-left:auto;font-size:12px;color:#aab2c5;display:flex;align-items:center;gap:6px}
#live i{width:8px;height:8px;border-radius:50%;background:#6b7385;display:inline-block}#live.on i{background:#34d27b;box-shadow:0 0 6px #34d27b}
main{padding:20px 28px 40px;max-width:1400px}h2{font-size:15px;margin:26px 0 10px;text-transform:uppercase;letter-spacing:.06em;color:var(--mute)}
.cards{display:flex;gap:12px;flex-wrap:wrap}.card{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:10px 16px;min-width:120px}
.card b{display:block;font-size:22px;font-variant-numeric:tabular-nums}.card span{color:var(--mute);font-size:12px}
.card.alarm{border-color:var(--bad);background:#fdecec}.card.alarm b{color:var(--bad)}
table{border-collapse:collapse;width:100%}table.grid{background:var(--card);border:1px solid var(--line);border-radius:8px;overflow:hidden}
th,td{padding:7px 10px;text-align:left;border-bottom:1px solid var(--line);vertical-align:middle}
th{font-size:11px;text-transform:uppercase;letter-spacing:.05em;color:var(--mute);background:#fafbfc;font-weight:600}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}td.hot{color:var(--bad);font-weight:600}
small{color:var(--mute);font-size:11px}code{font:12px ui-monospace,SFMono-Regular,Menlo,monospace}
tr.sub>td{padding:0 0 0 28px;background:#fafbfc}table.inner th{background:transparent}table.inner td{border-bottom:1px dashed var(--line)}
td.err{color:var(--bad);font-size:12px;max-width:420px;overflow-wrap:anywhere}td.empty{color:var(--mute);text-align:center}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:11px;font-weight:700;letter-spacing:.04em;color:#fff}
.badge.ok{background:var(--ok)}.badge.warn{background:var(--warn)}.badge.bad{background:var(--bad)}.badge.info{background:var(--info)}.badge.mute{background:#9aa1ae}
.avail{display:flex;align-items:center;gap:8px;min-width:150px}.avail .bar{flex:0 0 70px;height:7px;background:var(--line);border-radius:4px;overflow:hidden}
.avail .bar i{display:block;height:100%}.avail.ok i{background:var(--ok)}.avail.warn i{background:var(--warn)}.avail.bad i{background:var(--bad)}
.avail span{font-variant-numeric:tabular-nums;white-space:nowrap}
section.spawn{background:var(--card);border:1px solid var(--line);border-radius:8px;margin:0 0 14px;padding:0 0 4px}
section.spawn header{display:flex;align-items:center;gap:12px;padding:10px 14px;flex-wrap:wrap}section.spawn h3{margin:0;font-size:15px}
section.spawn .meta{color:var(--mute);font-size:13px}section.spawn .meta b{color:var(--fg)}section.spawn .avail{margin-left:auto}
section.spawn table.grid{border:0;border-top:1px solid var(--line);border-radius:0}
section.spawn.failed{border:2px solid var(--bad);box-shadow:0 0 0 4px #fbe0e0}section.spawn.failed header{background:#fdecec}
section.spawn.failed .badge.bad{font-size:13px;padding:2px 12px;animation:pulse 1.6s ease-in-out infinite}
@keyframes pulse{50%{opacity:.6}}
p.reason{margin:0;padding:8px 14px;color:var(--bad);font-weight:600;border-top:1px solid var(--line)}
p.crash{margin:0;padding:8px 14px;color:var(--warn);border-top:1px solid var(--line)}tr.pending td{color:var(--mute)}
p.listening{margin:0 0 12px;color:var(--mute)}p.listening code{color:var(--fg)}
details{padding:6px 14px}summary{cursor:pointer;color:var(--mute);font-size:12px}
pre{background:#1d2330;color:#e8ebf1;padding:10px 12px;border-radius:6px;overflow:auto;max-height:260px;font:12px/1.4 ui-monospace,Menlo,monospace}
`

/** Browser side: connect, re-render on each snapshot, reconnect with backoff. */
const CLIENT = `
(function () {
  var render = RENDER;
  var root = document.getElementById('status');
  var live = document.getElementById('live');
  var label = document.getElementById('live-text');
  var delay = 500;
  function connect () {
    var url = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + location.pathname.replace(/\\/$/, '') + '/live';
    var ws = new WebSocket(url);
    ws.onopen = function () { delay = 500; live.className = 'on'; };
    ws.onmessage = function (m) {
      var msg = JSON.parse(m.data);
      if (msg.type !== 'snapshot') return;
      root.innerHTML = render(msg.snapshot);
      label.textContent = 'live · ' + new Date(msg.snapshot.generatedAt).toLocaleTimeString();
      live.setAttribute('data-seq', String(msg.seq));
      live.setAttribute('data-generated', msg.snapshot.generatedAt);
    };
    ws.onclose = function () {
      live.className = '';
      label.textContent = 'reconnecting…';
      setTimeout(connect, delay);
      delay = Math.min(delay * 2, 10000);
    };
  }
  connect();
})();
`

export interface PageOptions {
  title?: string
  /** Open the live WebSocket (default true). */
  live?: boolean
}

/** The page plus the CSP header that allows exactly its own inline script. */
export function renderPage (s: StatusSnapshot, opts: PageOptions = {}): { html: string, csp: string } {
  const nonce = randomBytes(16).toString('base64')
  const esc = (v: string): string => v.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`)
  const title = esc(opts.title ?? 'proxycore status')
  const script = opts.live === false ? '' : `<script nonce="${nonce}">${CLIENT.replace('RENDER', () => `(${renderStatusBody.toString()})`)}</script>`
  const html = '<!doctype html><html lang="en"><head><meta charset="utf-8">' +
    '<meta name="viewport" content="width=device-width,initial-scale=1">' +
    `<meta name="referrer" content="no-referrer"><title>${title}</title><style>${CSS}</style></head><body>` +
    `<header class="top"><h1>${title}</h1><span class="sw">${esc(s.software)} · up ${esc(String(Math.floor(s.uptimeSeconds)))} s</span>` +
    `<span id="live"><i></i><span id="live-text">${opts.live === false ? 'static' : 'connecting…'}</span></span></header>` +
    `<main id="status">${renderStatusBody(s)}</main>${script}</body></html>`
  const csp = `default-src 'none'; style-src 'unsafe-inline'; script-src 'nonce-${nonce}'; connect-src 'self'; ` +
    "img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
  return { html, csp }
}
