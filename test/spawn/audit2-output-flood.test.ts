/**
 * Audit R2-D: output under pressure. A child writing 1 GiB to stdout as fast as it can must never
 * be blocked (it finishes), and the host's memory stays bounded (what the disk cannot take is
 * dropped and counted). A log directory on a full disk (a 1 MiB tmpfs, when this test may mount
 * one) loses output, counted, without a crash or a hang in close().
 */
import t from 'tap'
import { execFileSync } from 'node:child_process'
import { existsSync, mkdirSync, readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { leakTest } from './fixtures/guard.js'
import { ensure, manager, tempDir } from './fixtures/manager.js'
import { waitFor } from '../helpers/leaks.js'

const GIB = 1024 * 1024 * 1024

function within<T> (p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<T>((_resolve, reject) => { timer = setTimeout(() => reject(new Error(`${what} did not finish within ${ms} ms`)), ms) }),
  ])
}

leakTest(t, '1 GiB to stdout: the child is never blocked, host memory bounded, the rest counted', async (t, defer) => {
  const dir = join(tempDir(defer), 'logs')
  const done = join(tempDir(defer), 'done')
  const m = manager(defer, { log: { dir, maxSize: 4 * 1024 * 1024, keep: 1 } })
  const script = `head -c ${GIB} /dev/zero; echo ok > ${done}; exec sleep 300`
  m.add('flood', { binPath: ['/bin/sh', '-c', script], socketName: '127.0.0.1:0', stopTimeout: 1000 })
  const base = process.memoryUsage().rss
  let peak = base
  let bytes = 0
  m.on('stderr', (e) => { bytes += e.chunk.length })
  await m.start()
  await ensure(m, 'flood')
  // 1 GiB through a pipe takes seconds on a loaded box; 120 s is far beyond any run seen.
  t.ok(await waitFor(() => { peak = Math.max(peak, process.memoryUsage().rss); return existsSync(done) }, 120_000, 20), 'the child wrote all of it')
  t.ok(await waitFor(() => bytes === GIB, 30_000), `every chunk was read (${bytes})`)
  const status = m.status()[0]
  const onDisk = statSync(join(dir, 'flood.log')).size + (existsSync(join(dir, 'flood.log.1')) ? statSync(join(dir, 'flood.log.1')).size : 0)
  t.ok(onDisk <= 8 * 1024 * 1024 + 1024 * 1024, `files bounded by maxSize × (keep + 1) (${onDisk})`)
  t.ok(status.droppedOutputBytes > 0 || onDisk > 0, `dropped ${status.droppedOutputBytes}`)
  t.ok(peak - base < 256 * 1024 * 1024, `host RSS grew by ${Math.round((peak - base) / 1048576)} MiB, not by the output's size`)
  await within(m.close(), 10_000, 'close()')
}, { timeoutMs: 200_000 })

function canMount (): boolean {
  if (process.getuid?.() !== 0) return false
  const probe = join(tempDir(() => {}), 'probe')
  mkdirSync(probe)
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', probe], { stdio: 'ignore' })
    execFileSync('umount', [probe], { stdio: 'ignore' })
    return true
  } catch {
    return false
  } finally {
    execFileSync('rm', ['-rf', join(probe, '..')])
  }
}

leakTest(t, 'log directory on a full disk (1 MiB tmpfs): output lost is counted, the host goes on, close() finishes', async (t, defer) => {
  const root = tempDir(defer)
  const dir = join(root, 'logs')
  mkdirSync(dir)
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', dir])
  defer(() => { execFileSync('umount', [dir]) })
  const m = manager(defer, { log: { dir, maxSize: 64 * 1024 * 1024, keep: 1 } })
  // 4 MiB in 64 KiB writes into a 1 MiB disk, then a line the disk can no longer take.
  const script = 'i=0; while [ $i -lt 64 ]; do head -c 65536 /dev/zero | tr "\\0" x; i=$((i+1)); done; exec sleep 300'
  m.add('full', { binPath: ['/bin/sh', '-c', script], socketName: '127.0.0.1:0', stopTimeout: 1000 })
  let bytes = 0
  m.on('stderr', (e) => { bytes += e.chunk.length })
  await m.start()
  await ensure(m, 'full')
  t.ok(await waitFor(() => bytes === 64 * 65536, 30_000), `all output read (${bytes})`)
  t.ok(await waitFor(() => m.status()[0].droppedOutputBytes >= 3 * 1024 * 1024 - 64 * 1024, 10_000), `what the disk could not take is counted (${m.status()[0].droppedOutputBytes})`)
  const onDisk = statSync(join(dir, 'full.log')).size
  t.ok(onDisk <= 1024 * 1024, `the file holds what fit (${onDisk})`)
  t.ok(readFileSync(join(dir, 'full.log'), 'utf8').split('').every((c) => c === 'x'), 'and only the program\'s bytes')
  t.equal(m.status()[0].processes[0].state, 'ready', 'the program runs on')
  await within(m.close(), 10_000, 'close()')
}, { skip: canMount() ? false : 'needs root and tmpfs mounts (docs/guides/spawn.md describes the case)' })
