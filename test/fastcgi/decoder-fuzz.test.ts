/**
 * fast-check properties over the record decoder (time-boxed): random valid record streams decode
 * to the events they encode, whatever the chunking; random bytes never throw and decode the same
 * under any chunking.
 */
import t from 'tap'
import fc from 'fast-check'
import { type Event, decodeChunked, endBody, pairs, rec } from './helpers/records.js'

const budget = { numRuns: 300, interruptAfterTimeLimit: 4000 }

type Model = { kind: 'stdout' | 'stderr', id: number, data: string, pad: number }
  | { kind: 'end', id: number, app: number, proto: number, pad: number }
  | { kind: 'values', list: Array<[string, string]>, pad: number }

const id = fc.integer({ min: 1, max: 3 })
const pad = fc.integer({ min: 0, max: 255 })
const record: fc.Arbitrary<Model> = fc.oneof(
  fc.record({ kind: fc.constantFrom('stdout' as const, 'stderr' as const), id, data: fc.string({ unit: 'binary-ascii', maxLength: 300 }), pad }),
  fc.record({ kind: fc.constant('end' as const), id, app: fc.integer({ min: 0, max: 0xffffffff }), proto: fc.integer({ min: 0, max: 3 }), pad }),
  fc.record({ kind: fc.constant('values' as const), list: fc.array(fc.tuple(fc.string({ minLength: 1, maxLength: 140 }), fc.string({ maxLength: 140 })), { maxLength: 4 }), pad }),
)

function encode (m: Model): Buffer {
  switch (m.kind) {
    case 'stdout': return rec(6, m.id, m.data, m.pad)
    case 'stderr': return rec(7, m.id, m.data, m.pad)
    case 'end': return rec(3, m.id, endBody(m.app, m.proto), m.pad)
    case 'values': return rec(10, 0, pairs(m.list), m.pad)
  }
}

function expected (models: Model[]): Event[] {
  const out: Event[] = []
  for (const m of models) {
    const last = out[out.length - 1]
    if (m.kind === 'stdout' || m.kind === 'stderr') {
      if (m.data.length === 0) out.push([m.kind === 'stdout' ? 'stdoutEnd' : 'stderrEnd', m.id])
      else if (last !== undefined && last[0] === m.kind && last[1] === m.id) last[2] += m.data
      else out.push([m.kind, m.id, m.data])
    } else if (m.kind === 'end') out.push(['end', m.id, m.app, m.proto])
    else out.push(['values', [...new Map((m as Extract<Model, { kind: 'values' }>).list.map(([k, v]): [string, string] => [Buffer.from(k).toString('latin1'), Buffer.from(v).toString('latin1')]))]])
  }
  return out
}

const cuts = fc.array(fc.integer({ min: 1, max: 40 }), { maxLength: 200 })

t.test('valid streams decode to their model under any chunking', async (t) => {
  fc.assert(fc.property(fc.array(record, { maxLength: 20 }), cuts, (models, c) => {
    const bytes = Buffer.concat(models.map(encode))
    t.same(decodeChunked(bytes, c, [1, 2, 3]), expected(models))
  }), budget)
})

t.test('arbitrary bytes: never throws, chunking-independent, stops at the first error', async (t) => {
  fc.assert(fc.property(fc.uint8Array({ maxLength: 600 }), cuts, (raw, c) => {
    const bytes = Buffer.from(raw)
    const whole = decodeChunked(bytes, [], [1])
    t.same(decodeChunked(bytes, c, [1]), whole)
    const errors = whole.filter((e) => e[0] === 'error')
    t.ok(errors.length <= 1 && (errors.length === 0 || whole[whole.length - 1][0] === 'error'))
  }), budget)
})
