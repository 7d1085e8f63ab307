/**
 * Output capture when the log file fails: its directory removed (tmpfiles, an operator), the disk
 * full. The host must go on (no crash, no hang in close()), count what it lost, and log again once
 * the directory is back.
 */
import t from 'tap'
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { leakTest } from './fixtures/guard.js'
import { ensure, manager, tempDir } from './fixtures/manager.js'
import { OutputSink } from '../../src/spawn/output.js'
import { waitFor } from '../helpers/leaks.js'

/** Resolves with `p`, or rejects when it takes longer than `ms` (a hang must fail, not time out the file). */
function within<T> (p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<T>((_resolve, reject) => { timer = setTimeout(() => reject(new Error(`${what} did not finish within ${ms} ms`)), ms) }),
  ])
}

leakTest(t, 'OutputSink: a log file that fails on reopen counts what it lost, close() resolves, logging resumes', async (t, defer) => {
  const root = tempDir(defer)
  const dir = join(root, 'logs')
  mkdirSync(dir)
  const sink = new OutputSink('x', { dir, maxSize: 1000, keep: 1 }, () => {})
  defer(() => sink.close())
  sink.write('stdout', Buffer.from('first\n'), 1)
  t.ok(await waitFor(() => existsSync(join(dir, 'x.log')) && readFileSync(join(dir, 'x.log'), 'utf8') === 'first\n'), 'first line written')
  // The directory gone and a file in its place: it can be neither made again (a missing one is)
  // nor opened in, as a failing disk.
  rmSync(dir, { recursive: true })
  writeFileSync(dir, 'not a directory')
  // Over maxSize: rotation reopens the file, which fails (ENOTDIR): these 1000 bytes are lost.
  sink.write('stdout', Buffer.alloc(1000, 'a'), 1)
  t.ok(await waitFor(() => sink.dropped === 1000), `the lost chunk is counted (dropped ${sink.dropped})`)
  // While the file is failing, more output is dropped and counted, not queued on a dead stream.
  sink.write('stdout', Buffer.alloc(10, 'b'), 1)
  t.equal(sink.dropped, 1010, 'output while failing is counted')
  rmSync(dir)
  mkdirSync(dir)
  // Once the directory is back (and the retry delay passed) output reaches the file again.
  t.ok(await waitFor(() => {
    sink.write('stdout', Buffer.from('again\n'), 1)
    return existsSync(join(dir, 'x.log')) && readFileSync(join(dir, 'x.log'), 'utf8').startsWith('again\n')
  }, 5000, 50), 'logging resumed in the recreated directory')
  await within(sink.close(), 3000, 'close()')
  const dropped = sink.dropped
  sink.write('stdout', Buffer.from('late\n'), 1)
  t.equal(sink.dropped, dropped + 5, 'output after close() is counted, not written (no file reopened)')
  t.notOk(readFileSync(join(dir, 'x.log'), 'utf8').includes('late'), 'nothing written after close()')
})

leakTest(t, 'manager: log directory removed under a chatty program: no hang in close(), droppedOutputBytes counted', async (t, defer) => {
  const root = tempDir(defer)
  const dir = join(root, 'logs')
  mkdirSync(dir)
  const m = manager(defer, { log: { dir, maxSize: 300, keep: 1 } })
  // Prints a numbered line every 10 ms (bounded), then waits to be stopped.
  const script = 'i=0; while [ $i -lt 2000 ]; do echo "line $i"; i=$((i+1)); sleep 0.01; done; exec sleep 300'
  m.add('chatty', { binPath: ['/bin/sh', '-c', script], socketName: '127.0.0.1:0', stopTimeout: 1000 })
  let lines = 0
  m.on('stderr', (e) => { lines += e.chunk.toString().split('\n').length - 1 })
  await m.start()
  await ensure(m, 'chatty')
  t.ok(await waitFor(() => existsSync(join(dir, 'x.log.1')) || existsSync(join(dir, 'chatty.log.1')), 5000), 'rotated at maxSize')
  rmSync(dir, { recursive: true })
  writeFileSync(dir, 'not a directory') // a missing directory would be made again
  const before = lines
  // Enough output for several rotations into the missing directory.
  t.ok(await waitFor(() => lines > before + 100, 10_000), 'the program goes on writing')
  t.ok(m.status()[0].droppedOutputBytes > 0, `lost output counted (${m.status()[0].droppedOutputBytes} bytes)`)
  rmSync(dir)
  mkdirSync(dir)
  t.ok(await waitFor(() => existsSync(join(dir, 'chatty.log')), 5000), 'log file reopened once the directory is back')
  await within(m.close(), 8000, 'SpawnManager.close()')
})
