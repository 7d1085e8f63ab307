/**
 * Decoder golden vectors on literal bytes (FastCGI 1.0 §3.3, §4.1, §4.2, §5.5), each fed whole,
 * split at every byte boundary and one byte at a time; one test per malformed input asserting the
 * code (ws test/receiver.test.js style).
 */
import t from 'tap'
import { RecordDecoder } from '../../src/protocols/fastcgi/decoder.js'
import { type Event, Recorder, decodeChunked, feedings } from './helpers/records.js'

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex')
const ascii = (s: string): string => Buffer.from(s, 'latin1').toString('hex')

interface Vector { name: string, bytes: Buffer, events: Event[], active?: number[] }

const GOOD: Vector[] = [
  {
    name: 'STDOUT with padding, empty STDOUT, END_REQUEST appStatus 7',
    bytes: hex(`01 06 0001 0005 03 00 ${ascii('hello')} 000000
                01 06 0001 0000 00 00
                01 03 0001 0008 00 00 00000007 00 000000`),
    events: [['stdout', 1, 'hello'], ['stdoutEnd', 1], ['end', 1, 7, 0]],
  },
  {
    name: 'STDERR interleaved with STDOUT (§6.1), several empty STDERR records',
    bytes: hex(`01 06 0001 0002 00 00 ${ascii('ab')}
                01 07 0001 0003 05 00 ${ascii('err')} 0000000000
                01 06 0001 0001 07 00 ${ascii('c')} 00000000000000
                01 07 0001 0000 00 00
                01 07 0001 0000 00 00
                01 06 0001 0000 00 00
                01 03 0001 0008 00 00 00000000 00 000000`),
    events: [['stdout', 1, 'ab'], ['stderr', 1, 'err'], ['stdout', 1, 'c'], ['stderrEnd', 1], ['stderrEnd', 1], ['stdoutEnd', 1], ['end', 1, 0, 0]],
  },
  {
    name: 'END_REQUEST protocolStatus OVERLOADED, appStatus 0xdeadbeef',
    bytes: hex('01 03 0001 0008 00 00 deadbeef 02 000000'),
    events: [['end', 1, 0xdeadbeef, 2]],
  },
  {
    name: 'two multiplexed requests (ids 1 and 2) interleaved',
    bytes: hex(`01 06 0002 0001 00 00 ${ascii('B')}
                01 06 0001 0001 00 00 ${ascii('A')}
                01 03 0002 0008 00 00 00000000 00 000000
                01 03 0001 0008 00 00 00000000 01 000000`),
    events: [['stdout', 2, 'B'], ['stdout', 1, 'A'], ['end', 2, 0, 0], ['end', 1, 0, 1]],
    active: [1, 2],
  },
  {
    name: 'GET_VALUES_RESULT as php-cgi sends it (padding 5)',
    bytes: hex(`01 0a 0000 0033 05 00
                0e 01 ${ascii('FCGI_MAX_CONNS')} 32
                0d 01 ${ascii('FCGI_MAX_REQS')} 32
                0f 01 ${ascii('FCGI_MPXS_CONNS')} 30
                0000000000`),
    events: [['values', [['FCGI_MAX_CONNS', '2'], ['FCGI_MAX_REQS', '2'], ['FCGI_MPXS_CONNS', '0']]]],
  },
  {
    name: 'GET_VALUES_RESULT with a 4-byte value length, and an empty one',
    bytes: Buffer.concat([hex('01 0a 0000 0086 02 00 01 80000080'), Buffer.from('K'), Buffer.alloc(128, 0x76), hex('0000 01 0a 0000 0000 00 00')]),
    events: [['values', [['K', 'v'.repeat(128)]]], ['values', []]],
  },
  {
    name: 'UNKNOWN_TYPE (§4.2)',
    bytes: hex('01 0b 0000 0008 00 00 63 00000000000000'),
    events: [['unknownType', 0x63]],
  },
  {
    name: '255 padding bytes',
    bytes: Buffer.concat([hex('01 06 0001 0001 ff 00 7a'), Buffer.alloc(255, 0xee), hex('01 06 0001 0000 00 00')]),
    events: [['stdout', 1, 'z'], ['stdoutEnd', 1]],
  },
]

for (const v of GOOD) {
  t.test(v.name, async (t) => {
    for (const [how, cuts] of feedings(v.bytes)) {
      t.same(decodeChunked(v.bytes, cuts, v.active), v.events, how)
    }
  })
}

const BAD: Array<{ name: string, bytes: Buffer, before?: Event[] }> = [
  { name: 'version 2', bytes: hex('02 06 0001 0000 00 00') },
  { name: 'version 0', bytes: hex('00 03 0001 0008 00 00 0000000000000000') },
  { name: 'record type 12 (above FCGI_MAXTYPE)', bytes: hex('01 0c 0001 0000 00 00') },
  { name: 'PARAMS sent to the web server', bytes: hex('01 04 0001 0000 00 00') },
  { name: 'BEGIN_REQUEST sent to the web server', bytes: hex('01 01 0001 0008 00 00 0001000000000000') },
  { name: 'STDIN sent to the web server', bytes: hex('01 05 0001 0000 00 00') },
  { name: 'GET_VALUES sent to the web server', bytes: hex('01 09 0000 0000 00 00') },
  { name: 'STDOUT for an inactive request id 2', bytes: hex('01 06 0002 0001 00 00 41') },
  { name: 'STDOUT on request id 0', bytes: hex('01 06 0000 0001 00 00 41') },
  { name: 'END_REQUEST for an inactive request id', bytes: hex('01 03 0009 0008 00 00 0000000000000000') },
  { name: 'END_REQUEST with contentLength 7', bytes: hex('01 03 0001 0007 01 00 00000000000000 00') },
  { name: 'GET_VALUES_RESULT on request id 1', bytes: hex('01 0a 0001 0000 00 00') },
  { name: 'UNKNOWN_TYPE with contentLength 0', bytes: hex('01 0b 0000 0000 00 00') },
  { name: 'GET_VALUES_RESULT whose pair runs past the record', bytes: hex('01 0a 0000 0003 00 00 05 01 41') },
  {
    name: 'bad version after a good record',
    bytes: hex(`01 06 0001 0002 00 00 ${ascii('ok')} 03 06 0001 0000 00 00`),
    before: [['stdout', 1, 'ok']],
  },
]

for (const v of BAD) {
  t.test(`malformed: ${v.name} -> ERR_PROTOCOL`, async (t) => {
    for (const [how, cuts] of feedings(v.bytes)) {
      const events = decodeChunked(v.bytes, cuts)
      const last = events[events.length - 1]
      t.same(events.slice(0, -1), v.before ?? [], `${how}: events before the error`)
      t.equal(last?.[0], 'error', how)
      t.equal(last?.[1], 'ERR_PROTOCOL', how)
    }
  })
}

t.test('after an error the decoder ignores all input', async (t) => {
  const r = new Recorder()
  const d = new RecordDecoder(r)
  d.write(hex('02 06 0001 0000 00 00'))
  d.write(hex('01 06 0001 0001 00 00 41'))
  t.equal(r.events.length, 1)
  t.ok(d.failed)
})

t.test('atBoundary tells a clean close from a truncated record', async (t) => {
  const d = new RecordDecoder(new Recorder())
  t.ok(d.atBoundary)
  d.write(hex('01 06 0001 ffff ff 00 41 42'))
  t.notOk(d.atBoundary, 'mid-record')
  const d2 = new RecordDecoder(new Recorder())
  d2.write(hex('01 06'))
  t.notOk(d2.atBoundary, 'mid-header')
  d2.write(hex('0001 0000 00 00'))
  t.ok(d2.atBoundary)
})

t.test('pause stops delivery inside one chunk; resume continues where it stopped', async (t) => {
  const seen: string[] = []
  let allow = false
  const r = new Recorder()
  r.stdout = (_id, chunk) => { seen.push(chunk.toString()); return allow }
  const d = new RecordDecoder(r)
  d.write(hex(`01 06 0001 0001 00 00 41  01 06 0001 0001 00 00 42  01 06 0001 0000 00 00`))
  t.same(seen, ['A'], 'paused after the first piece')
  t.ok(d.isPaused)
  d.write(hex('01 03 0001 0008 00 00 0000000000000000'))
  t.same(seen, ['A'], 'still paused with more input buffered')
  allow = true
  d.resume()
  t.same(seen, ['A', 'B'])
  t.same(r.events, [['stdoutEnd', 1], ['end', 1, 0, 0]])
})
