/**
 * body-spool keepReading: a spooled reader its consumer still needs after the exchange's
 * cleanup() (a CGI script reading its body after answering) is left running by cleanup(), which
 * closes the temp file's fd only once that reader is closed, read to its end or destroyed.
 */
import t from 'tap'
import { createHash } from 'node:crypto'
import { Readable } from 'node:stream'
import { keepReading, spoolBody } from '../../src/core/body-spool.js'
import { guardLeaks } from '../helpers/leaks.js'

const SIZE = 1 << 20
const data = Buffer.alloc(SIZE)
for (let i = 0; i < SIZE; i++) data[i] = (i * 31) & 0xff

async function readAll (r: Readable): Promise<Buffer> {
  const chunks: Buffer[] = []
  for await (const c of r) chunks.push(c as Buffer)
  return Buffer.concat(chunks)
}

for (const [where, memoryBytes] of [['file', 64 * 1024], ['memory', 2 * SIZE]] as const) {
  t.test(`${where}: a kept reader outlives cleanup() and is read whole; the fd closes after it`, async (t) => {
    guardLeaks(t)
    const s = await spoolBody(Readable.from([data]), { maxBytes: 4 * SIZE, memoryBytes })
    t.equal(keepReading(s.body), true, 'a spooled reader can be kept')
    let cleaned = false
    const cleanup = s.cleanup().then(() => { cleaned = true })
    t.notOk(s.body.destroyed, 'cleanup() left it running')
    await new Promise((resolve) => setImmediate(resolve))
    t.notOk(cleaned, 'cleanup() waits for the kept reader')
    const got = await readAll(s.body)
    t.equal(createHash('sha256').update(got).digest('hex'), createHash('sha256').update(data).digest('hex'), 'read whole')
    await cleanup
    t.ok(cleaned, 'cleanup() done once the reader closed')
    t.equal(keepReading(s.body), false, 'a closed reader cannot be kept')
  })

  t.test(`${where}: a kept reader destroyed early lets cleanup() finish`, async (t) => {
    guardLeaks(t)
    const s = await spoolBody(Readable.from([data]), { maxBytes: 4 * SIZE, memoryBytes })
    t.equal(keepReading(s.body), true)
    const cleanup = s.cleanup()
    s.body.destroy()
    await cleanup
    t.pass('cleanup() finished')
  })
}

t.test('without keepReading cleanup() ends every reader; a client stream cannot be kept', async (t) => {
  guardLeaks(t)
  const s = await spoolBody(Readable.from([data]), { maxBytes: 4 * SIZE, memoryBytes: 1024 })
  await s.cleanup()
  t.ok(s.body.destroyed, 'destroyed by cleanup()')
  t.equal(keepReading(s.body), false)
  t.equal(keepReading(Readable.from([data])), false, 'not a spooled reader')
  t.equal(keepReading(null), false)
})
