/**
 * docs/reference/config-keys.md is generated from schema/proxycore.schema.json by
 * scripts/gen-config-doc.mjs. Regenerate it in memory and compare with the committed page, so the
 * page cannot drift from the schema (fix: `npm run docs:config`).
 */
import t from 'tap'
import { execFile } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { parse } from 'yaml'
import { guardLeaks } from '../helpers/leaks.js'

const root = (p: string): string => fileURLToPath(new URL(`../../${p}`, import.meta.url))
const execFileP = promisify(execFile)

t.test('config-keys.md matches the schema', async (t) => {
  guardLeaks(t)
  const { stdout } = await execFileP(process.execPath, [root('scripts/gen-config-doc.mjs'), '--stdout'], { maxBuffer: 4 * 1024 * 1024 })
  const committed = readFileSync(root('docs/reference/config-keys.md'), 'utf8')
  t.ok(stdout === committed, 'docs/reference/config-keys.md is up to date (run `npm run docs:config`)')
})

t.test('every schema key is documented, with a parseable YAML example', async (t) => {
  const page = readFileSync(root('docs/reference/config-keys.md'), 'utf8')
  const schema = JSON.parse(readFileSync(root('schema/proxycore.schema.json'), 'utf8')) as SchemaNode
  const keys: string[] = []
  const walk = (node: SchemaNode, prefix: string): void => {
    for (const [k, child] of Object.entries(node.properties ?? {})) {
      const full = prefix === '' ? k : `${prefix}.${k}`
      keys.push(full)
      if (child.properties !== undefined) walk(child, full)
      const inner = child.patternProperties !== undefined ? Object.values(child.patternProperties)[0] : undefined
      if (inner?.properties !== undefined) walk(inner, `${full}.<name>`)
      if (child.items?.properties !== undefined) walk(child.items, `${full}[]`)
    }
  }
  walk(schema, '')
  t.ok(keys.length > 80, `${keys.length} keys`)
  t.same(keys.filter((k) => !page.includes(`| \`${k}\``)), [], 'a row for every key')
  // The example column is the 4th cell of each row: it must parse as YAML.
  const bad: string[] = []
  for (const line of page.split('\n').filter((l) => l.startsWith('| `'))) {
    const cells = line.split(/(?<!\\)\|/).map((c) => c.trim())
    const ex = cells[4].replace(/^`|`$/g, '').replace(/\\\|/g, '|')
    if (ex === '—') continue
    try { parse(ex) } catch { bad.push(`${cells[1]}: ${ex}`) }
  }
  t.same(bad, [], 'every example parses as YAML')
})

interface SchemaNode {
  properties?: Record<string, SchemaNode>
  patternProperties?: Record<string, SchemaNode>
  items?: SchemaNode
}
