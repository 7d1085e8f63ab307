/**
 * A spawned program that exits in the middle of a UTF-8 character: its output is decoded chunk by
 * chunk and an incomplete character at a chunk's end is held for the next chunk; when the pipe
 * ends instead, the held bytes must not vanish. Without a logDir (the host's log) they are logged
 * as U+FFFD, as invalid bytes are everywhere else the output is decoded; with a logDir the file has
 * the bytes the program wrote. Real programs: /bin/sh printf of a lone lead byte (0xC3) and of the
 * first two bytes of a 3-byte character (0xE2 0x82 of €), then exit.
 */
import t from 'tap'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { leakTest } from './fixtures/guard.js'
import { backendScript, manager, nextEvent, tempDir } from './fixtures/manager.js'
import { alive, waitFor } from '../helpers/leaks.js'
import { logOutput } from '../../src/spawn/output.js'
import { SpawnSet } from '../../src/gateway/spawn-set.js'
import type { SpawnManager } from '../../src/spawn/manager.js'
import type { SpawnSpec } from '../../src/spawn/types.js'

/** Writes `text` (printf escapes) to stdout and `err` to stderr, then exits 0: one run, a long backoff. */
function once (out: string, err: string): SpawnSpec {
  return {
    binPath: ['/bin/sh', '-c', `printf '${out}'; printf '${err}' >&2; exit 0`],
    socketName: '127.0.0.1:0',
    minProcs: 1,
    restart: { initialDelay: 60_000, maxDelay: 60_000, maxStarts: 5, window: 60_000 },
    stopTimeout: 1000,
  }
}

function capture (m: SpawnManager): Array<{ stream: string, line: string }> {
  const lines: Array<{ stream: string, line: string }> = []
  logOutput(m, { info: (o: object, msg?: string) => { lines.push({ stream: (o as { stream: string }).stream, line: msg ?? '' }) } } as never)
  return lines
}

leakTest(t, 'no logDir: a lone lead byte and a 2-of-3-byte character at exit are logged as U+FFFD', async (t, defer) => {
  const m = manager(defer)
  const lines = capture(m)
  m.add('cut', once('caf\\303', 'price 5\\342\\202'))
  const exit = nextEvent(m, 'exit')
  await m.start()
  await exit
  const ok = await waitFor(() => lines.length >= 4, 5000)
  t.ok(ok, `flushed at the pipe's end (${JSON.stringify(lines)})`)
  const text = (stream: string): string => lines.filter((l) => l.stream === stream).map((l) => l.line).join('')
  t.equal(text('stdout'), 'caf\uFFFD', 'stdout: the lone 0xC3 as U+FFFD')
  t.equal(text('stderr'), 'price 5\uFFFD', 'stderr: 0xE2 0x82 as one U+FFFD')
})

leakTest(t, 'no logDir: a character split across two writes is still logged whole, then nothing more at the end', async (t, defer) => {
  const m = manager(defer)
  const lines = capture(m)
  m.add('split', {
    ...once('', ''),
    binPath: ['/bin/sh', '-c', "printf 'caf\\303'; sleep 0.3; printf '\\251 ok'; exit 0"],
  })
  let ended = 0
  m.on('output-end', () => { ended++ })
  const exit = nextEvent(m, 'exit')
  await m.start()
  await exit
  t.ok(await waitFor(() => lines.map((l) => l.line).join('').includes(' ok'), 5000), 'both writes logged')
  // A wrong flush would log after the pipes ended: wait for both ends.
  t.ok(await waitFor(() => ended === 2, 5000), 'stdout and stderr ended')
  t.equal(lines.map((l) => l.line).join(''), 'café ok', 'whole, and no U+FFFD added at the end')
})

leakTest(t, 'logDir: the file has the program\'s bytes, a character split between two writes is not cut by another process\'s output', async (t, defer) => {
  const dir = tempDir(defer)
  const m = manager(defer, { log: { dir } })
  // Two processes of one spawn write into one file. A: "caf" + 0xC3, 0.5 s later 0xA9 + "\n"; B
  // writes "b\n" every 20 ms meanwhile, so its lines land between A's two writes.
  const script = "if mkdir \"$DIR/a\" 2>/dev/null; then printf 'caf\\303'; sleep 0.5; printf '\\251\\n'; printf 'end\\303'; else i=0; while [ $i -lt 40 ]; do printf 'b\\n'; sleep 0.02; i=$((i+1)); done; fi; exec sleep 300"
  m.add('two', { binPath: ['/bin/sh', '-c', script], environment: { DIR: dir }, socketName: '127.0.0.1:0', minProcs: 2, maxProcs: 2, idleTimeout: 0, stopTimeout: 1000 })
  let out = ''
  m.on('stderr', (e) => { out += e.chunk.toString('latin1') })
  await m.start()
  t.ok(await waitFor(() => out.includes('end\xc3') && (out.match(/b\n/g) ?? []).length >= 40, 10_000), 'both programs wrote everything')
  await m.close()
  const file = readFileSync(join(dir, 'two.log')).toString('latin1')
  t.match(file, /caf(b\n)*\xc3\xa9\n/, `A's character is whole in the file, B's lines before it (${JSON.stringify(file)})`)
  t.equal(file.match(/b\n/g)?.length, 40, 'B\'s 40 lines')
  t.match(file, /end(b\n)*\xc3(b\n)*$/, 'the lead byte A ended with is in the file, as written (at close)')
  t.equal(file.length, Buffer.byteLength('café\nend') + 1 + 80, 'nothing else, nothing lost')
})

leakTest(t, 'logDir: a pipe still held at close() (a program that left the group) loses no held byte', async (t, defer) => {
  const dir = tempDir(defer)
  const m = manager(defer, { log: { dir } })
  // A setsid grandchild keeps stdout open past close(); what it wrote ends in a lone lead byte.
  const script = `setsid sh -c 'printf "held\\303"; exec sleep 300' & echo "escaped $!" >&2; exec "${process.execPath}" "${backendScript}" serve`
  m.add('esc', { binPath: ['/bin/sh', '-c', script], socketName: '127.0.0.1:0', minProcs: 1, stopTimeout: 500 })
  let out = ''
  m.on('stderr', (e) => { out += e.chunk.toString('latin1') })
  await m.start()
  t.ok(await waitFor(() => /escaped \d+/.test(out) && out.includes('held\xc3'), 5000), 'the grandchild wrote')
  const escaped = Number(/escaped (\d+)/.exec(out)?.[1])
  defer(async () => {
    try { process.kill(escaped, 'SIGKILL') } catch { /* gone */ }
    await waitFor(() => !alive(escaped), 5000)
  })
  await m.close()
  const file = readFileSync(join(dir, 'esc.log')).toString('latin1')
  // The script's own stderr line may land between "held" and the held byte: it is no character.
  t.match(file, /held(escaped \d+\n)?\xc3/, `the held byte was written before the file closed (${JSON.stringify(file)})`)
})

leakTest(t, 'the gateway (proxycore serve, no logDir): a program exiting mid-character has it logged as U+FFFD', async (t, defer) => {
  const lines: string[] = []
  const keep = (_o: object, msg?: string): void => { if (msg !== undefined) lines.push(msg) }
  const log = { debug: keep, info: keep, warn: keep, error: keep }
  const script = "printf 'na\\303\\257ve caf\\303'; exit 0"
  const { set } = await SpawnSet.empty(log).next({ spawns: { u: { binPath: ['/bin/sh', '-c', script], socketName: '127.0.0.1:0', stopTimeout: '1s', restart: { initialDelay: '60s' } } } })
  defer(() => set.close())
  t.ok(await waitFor(() => lines.join('').includes('\uFFFD'), 5000), `flushed (${JSON.stringify(lines)})`)
  t.ok(lines.join('').includes('naïve caf\uFFFD'), 'the whole characters decoded, the cut one as U+FFFD')
})
