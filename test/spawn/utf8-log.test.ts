/**
 * Without a logDir the gateway logs a spawn's output chunk by chunk. A pipe splits a program's
 * output wherever its writes (or the 64 KiB pipe buffer) end, so a UTF-8 character can straddle
 * two chunks: each half decoded alone became U+FFFD in both log entries.
 */
import t from 'tap'
import { leakTest } from './fixtures/guard.js'
import { waitFor } from '../helpers/leaks.js'
import { SpawnSet } from '../../src/gateway/spawn-set.js'
import type { Logger } from '../../src/core/types.js'
import { OutputText } from '../../src/spawn/output.js'

function capture (): { log: Logger, lines: string[] } {
  const lines: string[] = []
  const keep = (_o: object, msg?: string): void => { if (msg !== undefined) lines.push(msg) }
  return { log: { debug: keep, info: keep, warn: keep, error: keep }, lines }
}

leakTest(t, 'spawn output logged without a logDir: a character split across two chunks stays whole', async (t, defer) => {
  const { log, lines } = capture()
  // "café" written as "caf\xc3" and, in a second write after a pause, "\xa9 ok": two chunks.
  const script = "printf 'caf\\303'; sleep 0.3; printf '\\251 ok\\n'; exec sleep 300"
  const { set } = await SpawnSet.empty(log).next({ spawns: { u: { binPath: ['/bin/sh', '-c', script], socketName: '127.0.0.1:0', stopTimeout: '1s' } } })
  defer(() => set.close())
  t.ok(await waitFor(() => lines.join('').includes(' ok'), 5000), 'both writes logged')
  const text = lines.join('')
  t.notOk(text.includes('\uFFFD'), `no replacement character (${JSON.stringify(lines)})`)
  t.ok(text.includes('café ok'), 'the character decoded whole')
})

t.test('OutputText keeps an incomplete UTF-8 tail per process and stream', async (t) => {
  const d = new OutputText()
  const euro = Buffer.from('€') // e2 82 ac
  t.equal(d.text(1, 'stderr', Buffer.concat([Buffer.from('a'), euro.subarray(0, 1)])), 'a')
  t.equal(d.text(2, 'stderr', Buffer.from('other')), 'other', 'another process is not mixed in')
  t.equal(d.text(1, 'stdout', Buffer.from('x')), 'x', 'nor the other stream')
  t.equal(d.text(1, 'stderr', euro.subarray(1, 2)), '')
  t.equal(d.text(1, 'stderr', Buffer.concat([euro.subarray(2), Buffer.from('b')])), '€b')
  t.equal(d.text(1, 'stderr', Buffer.from([0xff, 0x41])), '\uFFFDA', 'invalid bytes are not held back')
  t.equal(d.text(1, 'stderr', Buffer.from('😀').subarray(0, 3)), '', 'a 4-byte character waits for its last byte')
  t.equal(d.end(1), '\uFFFD', 'end(pid) hands back what an exited process left half-written, as U+FFFD')
  t.equal(d.text(1, 'stderr', Buffer.from('z')), 'z', 'and forgets it')
  t.equal(d.end(1, 'stderr'), '', 'nothing held: nothing handed back')
})
