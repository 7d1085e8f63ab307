/**
 * Trojan Source (CVE-2021-42574) in the stderr tail: bidi embedding, override and isolate controls
 * (U+202A–U+202E, U+2066–U+2069) reorder the text shown after them, and U+2028/U+2029 break a line
 * where none was written. A process's stderr line shown on the page or in the JSON (`jq -r` on a
 * terminal) must not do either: they appear as `\uXXXX`, as other control characters appear as `\xHH`.
 */
import t from 'tap'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { StderrTail, type StatusSnapshot } from '../../src/status/index.js'
import { fetchText, snapshot, statusRig } from './harness.js'

const BIDI = [0x202a, 0x202b, 0x202c, 0x202d, 0x202e, 0x2066, 0x2067, 0x2068, 0x2069, 0x2028, 0x2029]
const hidden = new RegExp(`[${BIDI.map((c) => String.fromCharCode(c)).join('')}]`)
const shown = (c: number): string => `\\u${c.toString(16)}`

// "user=admin\u202e nimda=resu" reads `user=admin user=admin` reversed on the page; then exits 1.
const writer = `
const chars = ${JSON.stringify(BIDI)}.map((c) => String.fromCharCode(c)).join('|')
process.stderr.write('login user=\\u202eresu=nimda\\u202c ok\\n' + 'all:' + chars + ':end\\n', () => process.exit(1))
`

t.test('a real spawn: bidi controls and line/paragraph separators are escaped on the page and in the JSON', async (t) => {
  guardLeaks(t, { timeoutMs: 10_000 })
  const rig = await statusRig(t, {
    spawns: { trojan: { binPath: [process.execPath, '-e', writer], socketName: '127.0.0.1:0', restart: { initialDelay: '100ms', maxDelay: '100ms', maxStarts: 1, window: '30s' } } },
    routes: [{ name: 'trojan', match: { prefix: '/t/' }, protocol: 'http', spawn: 'trojan' }],
  })
  let s: StatusSnapshot = await snapshot(rig)
  const tail = (): string[] => s.spawns.find((x) => x.name === 'trojan')?.stderrTail ?? []
  t.ok(await waitFor(async () => { s = await snapshot(rig); return tail().some((l) => l.includes(':end')) }, 15_000), 'the stderr lines arrived')
  const lines = tail().filter((l) => l.startsWith('login') || l.startsWith('all:'))
  t.same(lines, ['login user=\\u202eresu=nimda\\u202c ok', `all:${BIDI.map(shown).join('|')}:end`], 'each one shown as \\uXXXX, the text kept')
  const html = await fetchText(`${rig.url}/server-status`)
  t.notOk(hidden.test(html.body), 'none reaches the HTML')
  t.match(html.body, 'login user=\\u202eresu=nimda\\u202c ok', 'the page shows the escaped line')
  const json = await fetchText(`${rig.url}/server-status?format=json`)
  t.notOk(hidden.test(json.body), 'none reaches the JSON text')
  t.notOk(hidden.test(JSON.stringify(JSON.parse(json.body))), 'nor the strings it decodes to (jq -r)')
})

t.test('StderrTail: every bidi control and separator escaped, other non-ASCII kept', async (t) => {
  const tail = new StderrTail()
  for (const c of BIDI) tail.push('s', Buffer.from(`a${String.fromCharCode(c)}b\n`))
  tail.push('s', Buffer.from('für \u00e9 \u{1f600}\n'))
  t.same(tail.lines('s'), [...BIDI.map((c) => `a${shown(c)}b`), 'für \u00e9 \u{1f600}'])
})
