#!/usr/bin/env node
// The demo's HTTP backend (node:http), spawned by proxycore with handoff self (PORT/HOST) or fd0.
// Routes: / (the home page, when asked directly: proxycore serves it as a static file), /app/* (echo), /pid.
import http from 'node:http'
import { listen, page } from './listen.mjs'
import { readFileSync } from 'node:fs'

const home = readFileSync(new URL('../public/index.html', import.meta.url))

const server = http.createServer((req, res) => {
  const url = new URL(req.url ?? '/', 'http://demo')
  if (url.pathname === '/' || url.pathname === '/index.html') {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end(home)
  } else if (url.pathname === '/pid') {
    res.writeHead(200, { 'content-type': 'text/plain' }).end(String(process.pid))
  } else {
    let size = 0
    req.on('data', (c) => { size += c.length })
    req.on('end', () => {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' })
      res.end(page('HTTP backend (node:http)', { method: req.method, url: req.url, host: req.headers.host, 'x-forwarded-for': req.headers['x-forwarded-for'], 'body bytes': size }))
    })
  }
})
listen(server)
