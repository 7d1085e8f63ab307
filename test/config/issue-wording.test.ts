/**
 * A problem line shows what the file holds. YAML's `.inf`, `-.inf` and `.nan` (and a number too
 * large for a double, `1e400`) are numbers JSON has no spelling for: they were shown as
 * `found null`, a value the file does not contain.
 */
import t from 'tap'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { loadConfig } from '../../src/config/load.js'
import { issueLine } from '../../src/config/report.js'

t.test('non-finite numbers are shown as such, not as null', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'pc-wording-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  for (const [yaml, shown] of [['.inf', 'Infinity'], ['1e400', 'Infinity'], ['-.inf', '-Infinity'], ['.nan', 'NaN']]) {
    const file = join(dir, 'p.yaml')
    writeFileSync(file, `drainTimeout: ${yaml}\nroutes: []\n`)
    const lines = (await loadConfig(file)).issues.map(issueLine)
    t.equal(lines.length, 1, yaml)
    t.match(lines[0], new RegExp(`/drainTimeout: invalid value \\(found ${shown}; expected a duration`), `${yaml}: ${lines[0]}`)
    t.notMatch(lines[0], /found null/)
  }
})
