/**
 * Spawns in createProxy: real children started from config, reached through every socket protocol,
 * and stopped by proxy.close() — and a config with a cross-field error starts no child at all.
 */
import t from 'tap'
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { guardLeaks, childrenOf } from '../helpers/leaks.js'
import { proxyServer, get } from '../helpers/servers.js'
import { createProxy, ConfigError, silentLogger } from '../../src/index.js'

const demo = fileURLToPath(new URL('../../examples/demo/backends/', import.meta.url))
const node = process.execPath

t.test('http (handoff self and fd0), fastcgi and scgi spawns through createProxy', async (t) => {
  guardLeaks(t)
  const { proxy, url } = await proxyServer(t, {
    spawns: {
      self: { binPath: [node, join(demo, 'http-app.mjs')], socketName: '127.0.0.1:0', handoff: 'self' },
      fd0: { binPath: [node, join(demo, 'http-app.mjs')], socketName: '127.0.0.1:0', idleTimeout: '1m' },
      fcgi: { binPath: [node, join(demo, 'fcgi-app.mjs')], socketName: '127.0.0.1:0', minProcs: 0, maxProcs: 2 },
      scgi: { binPath: [node, join(demo, 'scgi-app.mjs')], socketName: '127.0.0.1:0', stopTimeout: '2s' },
    },
    routes: [
      { match: { prefix: '/self/' }, protocol: 'http', spawn: 'self' },
      { match: { prefix: '/fcgi/' }, protocol: 'fastcgi', spawn: 'fcgi', scriptFilename: '/app' },
      { match: { prefix: '/scgi/' }, protocol: 'scgi', spawn: 'scgi', scriptFilename: '/app' },
      { protocol: 'http', spawn: 'fd0' },
    ],
  })
  t.ok(proxy.spawns, 'proxy.spawns is the manager')
  const self = await get(`${url}/self/pid`)
  t.equal(self.status, 200)
  const fd0 = await get(`${url}/pid`)
  t.equal(fd0.status, 200)
  t.not(self.body, fd0.body, 'two spawns, two processes')
  const fcgi = await get(`${url}/fcgi/x?q=1`)
  t.equal(fcgi.status, 200)
  t.match(fcgi.body, /FastCGI backend/)
  t.match(fcgi.body, /q=1/)
  const scgi = await get(`${url}/scgi/y`)
  t.equal(scgi.status, 200)
  t.match(scgi.body, /SCGI backend/)
  const names = proxy.spawns?.status().map((s) => `${s.name}:${s.state}`).sort()
  t.same(names, ['fcgi:running', 'fd0:running', 'scgi:running', 'self:running'])
  const pids = proxy.spawns?.status().flatMap((s) => s.processes.map((p) => p.pid)) ?? []
  t.ok(proxy.spawns?.status().every((s) => s.processes.some((p) => p.state === 'ready')), 'a ready process per spawn')
  await proxy.close()
  t.same(childrenOf().map((c) => c.pid).filter((p) => pids.includes(p)), [], 'close() stopped every child')
})

t.test('php-cgi over FastCGI from config', { skip: process.env.CI === 'true' || existsSync('/usr/bin/php-cgi') ? false : 'php-cgi not installed' }, async (t) => {
  guardLeaks(t)
  const root = mkdtempSync(join(tmpdir(), 'pc-php-'))
  t.teardown(() => rmSync(root, { recursive: true, force: true }))
  writeFileSync(join(root, 'index.php'), '<?php echo "php ", PHP_MAJOR_VERSION, " ", $_SERVER["SCRIPT_NAME"], " ", $_GET["a"] ?? "";')
  const { url } = await proxyServer(t, {
    spawns: { php: { binPath: '/usr/bin/php-cgi', socketName: '127.0.0.1:0', environment: { PHP_FCGI_CHILDREN: '0', PHP_FCGI_MAX_REQUESTS: '500' } } },
    routes: [{ protocol: 'fastcgi', spawn: 'php', docroot: root, index: ['index.php'] }],
  })
  const r = await get(`${url}/index.php?a=42`)
  t.equal(r.status, 200)
  t.match(r.body, /^php \d+ \/index\.php 42$/)
  const dir = await get(`${url}/`)
  t.equal(dir.status, 200, 'index.php for the directory')
})

t.test('cross-field errors reject the config before any child starts', async (t) => {
  guardLeaks(t)
  const err = await createProxy({
    logger: silentLogger,
    spawns: {
      app: { binPath: [node, join(demo, 'http-app.mjs')], socketName: '127.0.0.1:9999' },
      twin: { binPath: [node, join(demo, 'http-app.mjs')], socketName: '127.0.0.1:9999' },
      cgi: { socketType: 'pipe' },
      who: { binPath: 'x', socketName: '/tmp/x.sock', user: 'nobody' },
    },
    routes: [
      { protocol: 'http', spawn: 'nope' },
      { protocol: 'http', spawn: 'cgi' },
    ],
  }).catch((e: unknown) => e)
  t.ok(err instanceof ConfigError)
  const paths = (err as ConfigError).issues.map((i) => i.path).sort()
  t.same(paths, ['/routes/0/spawn', '/routes/1/spawn', '/spawns/twin/socketName', '/spawns/who/group'])
  t.match((err as ConfigError).message, /already used by \/spawns\/app\/socketName/)
  t.same(childrenOf(), [], 'nothing was started')
})

t.test('a health check every 0 ms, or with 0 ms to answer, is a config issue, not a busy loop or a start failure', async (t) => {
  guardLeaks(t)
  const err = await createProxy({
    logger: silentLogger,
    spawns: { app: { binPath: [node, join(demo, 'http-app.mjs')], socketName: '127.0.0.1:0', healthCheck: { type: 'connect', interval: '0s', timeout: 0 } } },
    routes: [{ protocol: 'http', spawn: 'app' }],
  }).catch((e: unknown) => e)
  t.ok(err instanceof ConfigError)
  t.same((err as ConfigError).issues.map((i) => [i.path, i.message]), [
    ['/spawns/app/healthCheck/interval', 'healthCheck interval must be above 0'],
    ['/spawns/app/healthCheck/timeout', 'healthCheck timeout must be above 0'],
  ])
  t.same(childrenOf(), [], 'nothing was started')
})

t.test('a spawn name outside [A-Za-z0-9_.-] is a config issue at its key, not a crash, and nothing starts', async (t) => {
  guardLeaks(t)
  const reject = async (spawns: Record<string, unknown>): Promise<unknown> => await createProxy({
    logger: silentLogger,
    spawns: spawns as never,
    routes: [{ protocol: 'http', spawn: 'bad name' }],
  }).catch((e: unknown) => e)
  const err = await reject({ 'bad name': { binPath: [node, join(demo, 'http-app.mjs')], socketName: 1 } })
  t.ok(err instanceof ConfigError, 'a ConfigError, not a TypeError')
  t.equal((err as ConfigError).code, 'ERR_CONFIG')
  t.same((err as ConfigError).issues.map((i) => i.path), ['/spawns/bad name', '/spawns/bad name/socketName'])
  t.match((err as ConfigError).message, /\/spawns\/bad name: bad spawn name "bad name": a spawn name may contain only ASCII letters, digits, "_", "\." and "-"/)
  const valid = await reject({ 'bad name': { binPath: [node, join(demo, 'http-app.mjs')], socketName: '127.0.0.1:0' } })
  t.ok(valid instanceof ConfigError)
  t.same((valid as ConfigError).issues.map((i) => i.path), ['/spawns/bad name'], 'a well-formed spawn under a bad name')
  t.match((valid as ConfigError).issues[0].message, /^bad spawn name "bad name": /, 'refused by the config check, before the spawn manager sees it')
  t.same(childrenOf(), [], 'nothing was started')
})

t.test('a string binPath with quotes or a backslash is a config issue: it is split on whitespace, no shell', async (t) => {
  guardLeaks(t)
  const err = await createProxy({
    logger: silentLogger,
    spawns: {
      app: { binPath: 'sh -c "exec node app.mjs"', socketName: '127.0.0.1:0' },
      esc: { binPath: 'node my\\ app.mjs', socketName: '127.0.0.1:0', healthCheck: { type: 'command', command: "sh -c 'exit 0'" } },
      ok: { binPath: ['sh', '-c', 'exec node "app.mjs"'], socketName: '127.0.0.1:0' },
    },
    routes: [{ protocol: 'http', spawn: 'app' }, { protocol: 'http', spawn: 'esc' }, { protocol: 'http', spawn: 'ok' }],
  }).catch((e: unknown) => e)
  t.ok(err instanceof ConfigError)
  t.same((err as ConfigError).issues.map((i) => i.path), ['/spawns/app/binPath', '/spawns/esc/binPath', '/spawns/esc/healthCheck/command'], 'the list form is fine')
  t.match((err as ConfigError).issues[0].message, /not by a shell/)
  t.same(childrenOf(), [], 'nothing was started')
})
