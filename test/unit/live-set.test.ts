/**
 * The in-flight tables: LiveSet (exchanges, connections), KeyTable (fork server tokens and ids),
 * the FastCGI connection's RequestTable — and the reason they exist: churned through a long-lived
 * `Set`, per-request objects get promoted out of V8's young generation; through a LiveSet they
 * do not.
 */
import t from 'tap'
import { join } from 'node:path'
import { KeyTable, LiveSet, SLOT, type Slotted } from '../../src/live-set.js'
import { RequestTable } from '../../src/protocols/fastcgi/connection.js'
import type { FcgiRequest } from '../../src/protocols/fastcgi/request.js'
import { ensureBuilt, root } from '../cli/run.js'
import { runNode } from '../helpers/run-node.js'

class Item implements Slotted {
  [SLOT] = -1
  constructor (readonly n: number) {}
}

t.test('LiveSet: add, has, delete (the last member fills the hole), size, copies', async (t) => {
  const s = new LiveSet<Item>()
  const items = [0, 1, 2, 3, 4].map((n) => new Item(n))
  for (const x of items) s.add(x)
  s.add(items[2])
  t.equal(s.size, 5, 'adding a member twice keeps one')
  t.ok(items.every((x) => s.has(x)))
  t.ok(s.delete(items[1]))
  t.notOk(s.delete(items[1]), 'a second delete finds nothing')
  t.equal(items[1][SLOT], -1)
  t.notOk(s.has(items[1]))
  t.same(s.values().map((x) => x.n), [0, 4, 2, 3], 'the last member moved into the hole')
  t.equal(items[4][SLOT], 1)
  t.ok(s.delete(items[3]), 'deleting the last member')
  t.same(s.view().map((x) => x.n), [0, 4, 2])
  const other = new LiveSet<Item>()
  const stranger = new Item(9)
  other.add(stranger)
  t.notOk(s.has(stranger), 'a member of another set is not a member here')
  t.notOk(s.delete(stranger))
  t.ok(other.has(stranger))
  const copy = s.values()
  for (const x of copy) s.delete(x)
  t.equal(s.size, 0, 'deleting while walking a copy reaches every member')
  s.add(items[0])
  s.clear()
  t.equal(s.size, 0)
  t.equal(items[0][SLOT], -1)
})

t.test('KeyTable: string and number keys, size, values', async (t) => {
  const k = new KeyTable<string>()
  k.set('a1', 'x')
  k.set(7, 'y')
  k.set('a1', 'z')
  t.equal(k.size, 2)
  t.equal(k.get('a1'), 'z')
  t.equal(k.get(7), 'y')
  t.equal(k.get('7'), 'y', 'numbers and their strings are one key, as on any object')
  t.equal(k.get('toString'), undefined, 'no prototype to inherit from')
  t.equal(k.get(Number.NaN), undefined)
  t.same(k.values().sort(), ['y', 'z'])
  t.ok(k.delete(7))
  t.notOk(k.delete(7))
  t.equal(k.size, 1)
})

t.test('FastCGI RequestTable: the lowest free id, reused after its end (FastCGI 1.0 §3.3)', async (t) => {
  const r = new RequestTable()
  const req = (n: number): FcgiRequest => ({ n }) as unknown as FcgiRequest
  t.equal(r.freeId(), 1)
  r.set(1, req(1))
  t.equal(r.freeId(), 2)
  r.set(2, req(2))
  r.set(3, req(3))
  t.equal(r.size, 3)
  t.ok(r.delete(2))
  t.notOk(r.delete(2))
  t.notOk(r.has(2))
  t.equal(r.freeId(), 2, 'the hole is the lowest free id')
  t.equal(r.get(3), r.values()[1])
  t.notOk(r.has(65535), 'an id never used')
  t.ok(r.delete(3))
  t.ok(r.delete(1))
  t.equal(r.size, 0)
  t.same(r.values(), [])
  t.equal(r.freeId(), 1)
  r.set(5, req(5))
  t.equal(r.size, 1, 'a sparse id')
  t.equal(r.freeId(), 1)
  r.clear()
  t.equal(r.size, 0)
  t.notOk(r.has(5))
})

/**
 * 400 000 request-like objects pass through a table that holds the newest 32, as exchanges pass
 * through the proxy, in event-loop turns of 20 000. `--trace-gc-nvp` reports the bytes each
 * scavenge promoted to the old generation: with a `Set` nearly every object is promoted (~90 MiB),
 * with a LiveSet next to nothing. (Allocation-site pretenuring is off, as in `proxycore serve`:
 * it is the other way objects get promoted, see docs/design/architecture.md.)
 */
t.test('churn through a LiveSet promotes (almost) nothing; through a Set, nearly everything', async (t) => {
  await ensureBuilt()
  const mod = JSON.stringify(`file://${join(root, 'dist', 'live-set.js')}`)
  const script = `
    const { LiveSet, SLOT } = await import(${mod})
    const table = process.argv[1] === 'set' ? new Set() : new LiveSet()
    const held = []
    let i = 0
    const make = () => ({ [SLOT]: -1, payload: new Array(40).fill(0), client: { address: 'x' + Math.random() } })
    const turn = () => {
      for (let j = 0; j < 20000; j++, i++) {
        const o = make()
        table.add(o)
        held.push(o)
        if (held.length > 32) table.delete(held.shift())
      }
      if (i < 400000) setImmediate(turn)
    }
    turn()
  `
  const promoted: Record<string, number> = {}
  for (const kind of ['set', 'live']) {
    const r = await runNode(['--max-semi-space-size=1', '--no-allocation-site-pretenuring', '--trace-gc-nvp', '--input-type=module', '-e', script, kind], { cwd: root })
    t.equal(r.code, 0, `${kind} ran: ${r.stderr}`)
    let sum = 0
    let scavenges = 0
    // `gc=s … promoted=N` up to Node 24; Node 26's V8 prints each GC as JSON (`"gc":"s"`, `"promoted":N`).
    for (const m of r.stdout.matchAll(/gc=s .*? promoted=(\d+)|"gc":"s".*?"promoted":(\d+)/g)) { sum += Number(m[1] ?? m[2]); scavenges++ }
    t.ok(scavenges > 10, `${kind}: ${scavenges} scavenges`)
    promoted[kind] = sum
  }
  t.comment(`promoted: Set ${(promoted.set / 1048576).toFixed(1)} MiB, LiveSet ${(promoted.live / 1048576).toFixed(1)} MiB`)
  t.ok(promoted.set > 30 * 1048576, 'the Set got most of it promoted (the effect this guards against)')
  t.ok(promoted.live < promoted.set / 10, 'the LiveSet promoted a tenth of that or less')
})
