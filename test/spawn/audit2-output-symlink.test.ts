/**
 * Audit R2-D: the spawn's log file planted as a symlink (whoever can write log.dir) must not make
 * the host (often root) append the children's output to the link's target, e.g. a file in /etc.
 */
import t from 'tap'
import { execFileSync } from 'node:child_process'
import { closeSync, constants, lstatSync, mkdirSync, openSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { leakTest } from './fixtures/guard.js'
import { tempDir } from './fixtures/manager.js'
import { OutputSink } from '../../src/spawn/output.js'
import { waitFor } from '../helpers/leaks.js'

leakTest(t, 'OutputSink: a symlink at <name>.log is not followed; its target keeps its bytes', async (t, defer) => {
  const root = tempDir(defer)
  const dir = join(root, 'logs')
  mkdirSync(dir)
  // Stands in for /etc/something: a file outside log.dir the link points at.
  const victim = join(root, 'victim')
  writeFileSync(victim, 'precious\n')
  symlinkSync(victim, join(dir, 'x.log'))
  const sink = new OutputSink('x', { dir, maxSize: 1 << 20, keep: 1 }, () => {})
  defer(() => sink.close())
  sink.write('stdout', Buffer.from('attacker-controlled\n'), 1)
  // The write either fails (counted as dropped) or, in a later version, lands elsewhere: wait
  // until the sink settled one way or the other, then the victim must be untouched.
  t.ok(await waitFor(() => sink.dropped > 0 || readFileSync(victim, 'utf8') !== 'precious\n', 5000), 'the write settled')
  await sink.close()
  t.equal(readFileSync(victim, 'utf8'), 'precious\n', 'the link target was not written')
  t.ok(lstatSync(join(dir, 'x.log')).isSymbolicLink(), 'the link itself is left as it was')
  t.equal(sink.dropped, 20, 'the lost output is counted')
})

leakTest(t, 'OutputSink: a FIFO planted at <name>.log neither hangs the host nor its close()', async (t, defer) => {
  const root = tempDir(defer)
  const dir = join(root, 'logs')
  mkdirSync(dir)
  execFileSync('mkfifo', [join(dir, 'x.log')])
  const sink = new OutputSink('x', { dir, maxSize: 1 << 20, keep: 1 }, () => {})
  let closed = false
  defer(async () => {
    // A blocked open(2) holds a libuv pool thread until someone opens the FIFO for reading.
    if (!closed) { try { closeSync(openSync(join(dir, 'x.log'), constants.O_RDONLY | constants.O_NONBLOCK)) } catch { /* gone */ } }
  })
  sink.write('stdout', Buffer.from('hello\n'), 1)
  t.ok(await waitFor(() => sink.dropped > 0, 5000), `the write into a FIFO nobody reads fails and is counted (dropped ${sink.dropped})`)
  let timer: NodeJS.Timeout | undefined
  const finished = await Promise.race([
    sink.close().then(() => true),
    new Promise<boolean>((resolve) => { timer = setTimeout(() => resolve(false), 5000) }),
  ])
  clearTimeout(timer)
  closed = finished
  t.ok(finished, 'close() resolved')
})
