#!/usr/bin/env node
// A CGI script in Node (RFC 3875): environment in, head + body on stdout.
const e = process.env
const esc = (s) => String(s ?? '').replace(/[&<>"]/g, (c) => `&#${c.charCodeAt(0)};`)
process.stdout.write('Content-Type: text/html; charset=utf-8\r\n\r\n')
process.stdout.write(`<!doctype html><title>CGI (node)</title><h1>CGI script (node ${process.version})</h1>\n` +
  `<p>pid ${process.pid}, ${esc(e.REQUEST_METHOD)} ${esc(e.SCRIPT_NAME)}${esc(e.PATH_INFO)}, query "${esc(e.QUERY_STRING)}"</p><p><a href="/">home</a></p>\n`)
