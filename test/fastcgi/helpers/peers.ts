/**
 * Real FastCGI peers for integration tests: php-cgi and fcgiwrap handed a listening unix socket on
 * fd 0 (FastCGI 1.0 §2.2 FCGI_LISTENSOCK_FILENO), php-fpm with a generated pool config. Each runs
 * in its own process group and is stopped by signalling the group, then reaped.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync, linkSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { join } from 'node:path'
import type { Test } from 'tap'
import { waitFor } from '../../helpers/leaks.js'
import { tempDir as makeTempDir } from '../../helpers/tmp.js'
import { connectable } from '../../../bench/lib/proc.mjs'

type Tap = Test

export const PHP_CGI = '/usr/bin/php-cgi'
export const PHP_FPM = '/usr/sbin/php-fpm8.2'
export const FCGIWRAP = '/usr/sbin/fcgiwrap'

/** A missing peer skips locally and fails under CI=true. Returns whether the test can run. */
export function havePeer (t: Tap, bin: string): boolean {
  if (existsSync(bin)) return true
  if (process.env.CI === 'true') t.fail(`peer ${bin} is not installed`)
  else t.plan(0, `peer ${bin} is not installed`)
  return false
}

export function tempDir (t: Tap, prefix = 'pc-fcgi-'): string {
  return makeTempDir(t, prefix)
}

export interface Peer {
  socketPath: string
  child: ChildProcess
  /** What the peer wrote to its own stderr. */
  log: () => string
}

async function stopGroup (child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  try { process.kill(-child.pid!, 'SIGTERM') } catch {}
  const timer = setTimeout(() => { try { process.kill(-child.pid!, 'SIGKILL') } catch {} }, 3000)
  await exited
  clearTimeout(timer)
}

function track (t: Tap, child: ChildProcess, socketPath: string): Peer {
  let log = ''
  child.stderr!.setEncoding('utf8').on('data', (s: string) => { log += s })
  t.teardown(() => stopGroup(child))
  return { socketPath, child, log: () => log }
}

/** Spawn `argv` with a listening unix socket as fd 0, the way lighttpd and spawn-fcgi do. */
export async function startOnFd0 (t: Tap, dir: string, argv: string[], env: Record<string, string>): Promise<Peer> {
  const socketPath = join(dir, 'backend.sock')
  const bindPath = join(dir, 'bind.sock')
  const server = createServer()
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(bindPath, resolve))
  const fd = (server as unknown as { _handle: { fd: number } })._handle.fd
  const child = spawn(argv[0], argv.slice(1), { stdio: [fd, 'ignore', 'pipe'], env, detached: true, cwd: dir })
  // The child holds its own copy of the listening socket; ours would only leak an fd. Closing a
  // listening unix socket makes libuv unlink its path, so the backend's name is a second link.
  linkSync(bindPath, socketPath)
  await new Promise<void>((resolve) => server.close(() => resolve()))
  return track(t, child, socketPath)
}

export async function startPhpCgi (t: Tap, dir: string, children = 2, extraEnv: Record<string, string> = {}): Promise<Peer> {
  return startOnFd0(t, dir, [PHP_CGI, '-n', '-d', 'display_errors=0', '-d', 'log_errors=1'], {
    PATH: '/usr/bin:/bin', PHP_FCGI_CHILDREN: String(children), PHP_FCGI_MAX_REQUESTS: '10000', ...extraEnv,
  })
}

export async function startFcgiwrap (t: Tap, dir: string, children = 1): Promise<Peer> {
  return startOnFd0(t, dir, [FCGIWRAP, '-f', '-c', String(children)], { PATH: '/usr/bin:/bin' })
}

/** php-fpm in the foreground with a static pool of `children` listening on a unix socket in `dir`. */
export async function startPhpFpm (t: Tap, dir: string, children = 2, poolExtra = ''): Promise<Peer> {
  const socketPath = join(dir, 'fpm.sock')
  const conf = join(dir, 'fpm.conf')
  writeFileSync(conf, [
    '[global]',
    // stderr is a socketpair, which /proc/self/fd/2 cannot reopen (ENXIO); -O copies the log to it.
    `error_log = ${join(dir, 'fpm.log')}`,
    'daemonize = no',
    `pid = ${join(dir, 'fpm.pid')}`,
    '[pool]',
    'user = root',
    'group = root',
    `listen = ${socketPath}`,
    'pm = static',
    `pm.max_children = ${children}`,
    'catch_workers_output = yes',
    'php_admin_value[display_errors] = 0',
    'php_admin_value[log_errors] = 1',
    poolExtra,
    '',
  ].join('\n'))
  const args = ['-F', '-O', '-n', '-y', conf]
  if (process.getuid?.() === 0) args.push('-R')
  const child = spawn(PHP_FPM, args, { stdio: ['ignore', 'ignore', 'pipe'], detached: true, cwd: dir, env: { PATH: '/usr/bin:/bin' } })
  const peer = track(t, child, socketPath)
  const up = await waitFor(async () => child.exitCode !== null || await connectable(socketPath), 10_000, 20)
  t.ok(up && child.exitCode === null, `php-fpm is listening ${child.exitCode === null ? '' : peer.log()}`)
  return peer
}

/** The behaviour-by-query PHP fixture (lighttpd fcgi-responder style). */
export const PHP_FIXTURE = `<?php
parse_str($_SERVER['QUERY_STRING'] ?? '', $q);
if (isset($q['echo'])) {
  $in = file_get_contents('php://input');
  header('Content-Type: text/plain');
  echo $_SERVER['REQUEST_METHOD'], ' ', $_SERVER['CONTENT_LENGTH'] ?? '-', ' ', strlen($in), ' ', md5($in);
} elseif (isset($q['big'])) {
  header('Content-Type: application/octet-stream');
  $chunk = str_repeat('0123456789abcdef', 4096);
  for ($n = (int)$q['big']; $n > 0; $n -= strlen($chunk)) { echo $n >= strlen($chunk) ? $chunk : substr($chunk, 0, $n); }
} elseif (isset($q['stderr'])) {
  error_log('to-stderr-' . $q['stderr']);
  echo 'logged';
} elseif (isset($q['sleep'])) {
  usleep((int)$q['sleep'] * 1000);
  echo 'slept ', getmypid();
} elseif (isset($q['status'])) {
  header('Status: 404 Not Found');
  header('X-Test: yes');
  echo 'nope';
} elseif (isset($q['env'])) {
  echo $_SERVER[$q['env']] ?? '(unset)';
} else {
  echo 'pid ', getmypid();
}
`
