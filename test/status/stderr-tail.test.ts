/**
 * The stderr tail cuts lines on the bytes, never on chunk boundaries: a long line written in
 * several pieces is one line, a UTF-8 character split between two writes stays one character, a
 * chunk larger than the ring never glues an old partial line onto a fragment of another line, and
 * ANSI sequences / control characters are not replayed to the page or a terminal.
 * Against a real spawned process writing its stderr in pieces, and on StderrTail directly for the
 * chunk shapes a pipe does not reliably produce.
 */
import t from 'tap'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { StderrTail } from '../../src/status/index.js'
import type { StatusSnapshot } from '../../src/status/index.js'
import { fetchText, snapshot, statusRig } from './harness.js'

const node = process.execPath

// Writes its stderr in pieces, each write flushed before the next after a pause, then exits 1.
const writer = `
const w = (s) => new Promise((r) => process.stderr.write(s, r))
const pause = () => new Promise((r) => setTimeout(r, 40))
;(async () => {
  await w('FATAL: db'); await pause(); await w(' down\\n')
  await w('START-' + 'x'.repeat(3000)); await pause(); await w('y'.repeat(3000)); await pause(); await w('\\n')
  const b = Buffer.from('Fehler: f\\u00fcr\\n'); await w(b.subarray(0, 10)); await pause(); await w(b.subarray(10))
  await w('\\u001b[31mred\\u001b[0m \\u001b]0;title\\u0007bell\\n')
  process.exit(1)
})()
`

t.test('a real spawn writing stderr in pieces: whole lines, whole characters, no escapes', async (t) => {
  guardLeaks(t, { timeoutMs: 10_000 })
  const rig = await statusRig(t, {
    spawns: { noisy: { binPath: [node, '-e', writer], socketName: '127.0.0.1:0', restart: { initialDelay: '100ms', maxDelay: '100ms', maxStarts: 1, window: '30s' } } },
    routes: [{ name: 'noisy', match: { prefix: '/n/' }, protocol: 'http', spawn: 'noisy' }],
  })
  let s: StatusSnapshot = await snapshot(rig)
  const tail = (): string[] => s.spawns.find((x) => x.name === 'noisy')?.stderrTail ?? []
  t.ok(await waitFor(async () => { s = await snapshot(rig); return s.spawns[0]?.failed === true && tail().some((l) => l.includes('bell')) }, 15_000), 'spawn FAILED with its stderr')
  const last4 = tail().slice(-4)
  t.same(last4, ['FATAL: db down', `START-${'x'.repeat(506)}…`, 'Fehler: für', 'red bell'], 'one line per line written')
  t.notOk(tail().some((l) => /^y/.test(l)), 'the rest of a long line is not a line of its own')
  const html = await fetchText(`${rig.url}/server-status`)
  t.match(html.body, /FATAL: db down\nSTART-x{506}…\nFehler: für\nred bell/, 'the page shows the same lines')
  t.notOk(/[\x00-\x08\x0b-\x1f]/.test(html.body), 'no control character reaches the HTML')
  const json = await fetchText(`${rig.url}/server-status?format=json`)
  t.notOk(json.body.includes('\\u001b'), 'no escape sequence in the JSON (jq -r would replay it on a terminal)')
})

t.test('StderrTail: chunk shapes', async (t) => {
  t.test('a long line in many chunks is one line; the next line is its own', async (t) => {
    const tail = new StderrTail({ lines: 20, lineBytes: 16 })
    tail.push('a', Buffer.from('first\n'))
    for (let i = 0; i < 10; i++) tail.push('a', Buffer.from(String(i).repeat(40)))
    t.same(tail.lines('a'), ['first', `${'0'.repeat(16)}…`], 'pending long line shown cut')
    tail.push('a', Buffer.from('\nlast\n'))
    t.same(tail.lines('a'), ['first', `${'0'.repeat(16)}…`, 'last'])
  })

  t.test('a chunk larger than the ring: no old partial glued onto a fragment', async (t) => {
    const tail = new StderrTail({ lines: 3, lineBytes: 20 })
    tail.push('a', Buffer.from('FATAL: db'))
    tail.push('a', Buffer.from(' down\nSTART-' + 'x'.repeat(200) + '\nok\n'))
    t.same(tail.lines('a'), ['FATAL: db down', `START-${'x'.repeat(14)}…`, 'ok'])
    // More than `lines` lines in one chunk: the partial's line is older than all of them.
    tail.push('a', Buffer.from('OLD'))
    tail.push('a', Buffer.from('-rest\nl1\nl2\n\r\n\nl3\npending'))
    t.same(tail.lines('a'), ['l2', 'l3', 'pending'])
    tail.push('a', Buffer.from(' done\n'))
    t.same(tail.lines('a'), ['l2', 'l3', 'pending done'])
  })

  t.test('UTF-8 split between chunks, invalid UTF-8, CRLF', async (t) => {
    const tail = new StderrTail()
    const b = Buffer.from('für 😀 ok\r\n')
    for (let i = 0; i < b.length; i++) tail.push('a', b.subarray(i, i + 1)) // byte by byte
    tail.push('a', Buffer.from([0x62, 0x61, 0x64, 0xff, 0xc3, 0x0a]))
    t.same(tail.lines('a'), ['für 😀 ok', 'bad\ufffd\ufffd'])
  })

  t.test('cut in the middle of a multi-byte character or a surrogate pair', async (t) => {
    const tail = new StderrTail({ lines: 5, lineBytes: 3 })
    tail.push('a', Buffer.from('ab😀cd\n'))
    tail.push('a', Buffer.from('😀😀😀😀😀😀\n'))
    const lines = tail.lines('a')
    t.same(lines, ['ab…', '😀…'])
    t.ok(lines.every((l) => !/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/.test(l)), 'no lone surrogate')
  })

  t.test('ANSI sequences removed, other controls shown as \\xHH', async (t) => {
    const tail = new StderrTail()
    tail.push('a', Buffer.from('\x1b[1;31mERROR\x1b[0m x\n10%\r100%\n\x07\x00\x7f\tz\n\x1b]0;t\x1b\\y\n'))
    t.same(tail.lines('a'), ['ERROR x', '10%\\x0d100%', '\\x07\\x00\\x7f\tz', 'y'])
  })
})
