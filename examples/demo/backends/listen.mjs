// Where a spawned backend listens, as proxycore's spawn manager hands it over:
// fd 3 (systemd LISTEN_FDS), SOCKET or HOST/PORT (handoff: self), else the socket on fd 0 (handoff: fd0).
export function listen (server) {
  if (process.env.LISTEN_FDS === '1' && process.env.LISTEN_PID === String(process.pid)) server.listen({ fd: 3 })
  else if (process.env.SOCKET) server.listen(process.env.SOCKET)
  else if (process.env.PORT) server.listen(Number(process.env.PORT), process.env.HOST)
  else server.listen({ fd: 0 })
  // The manager stops us with SIGTERM: finish what is in flight, then exit.
  process.on('SIGTERM', () => { server.close(() => process.exit(0)); server.closeAllConnections?.() })
}

/** The demo page every backend answers with, so the home page can show who served what. */
export function page (title, env) {
  const rows = Object.entries(env).map(([k, v]) => `<tr><td>${k}</td><td>${escape(String(v))}</td></tr>`).join('')
  return `<!doctype html><meta charset="utf-8"><title>${title}</title>` +
    `<h1>${title}</h1><p>pid ${process.pid}</p><table>${rows}</table><p><a href="/">home</a></p>\n`
}

function escape (s) {
  return s.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c])
}
