/**
 * The newcomer docs stay true to the code: every complete YAML config in them (a block with a
 * top-level `routes:`) passes the same validation as `proxycore check`, every YAML block parses,
 * and every relative link points at a file that exists.
 */
import t from 'tap'
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parse } from 'yaml'
import { loadConfig } from '../../src/index.js'
import { guardLeaks } from '../helpers/leaks.js'
import { tempDir } from '../cgi/harness.js'

const root = fileURLToPath(new URL('../../', import.meta.url))
const DOCS = [
  'docs/README.md', 'docs/getting-started.md', 'docs/guides/php.md', 'docs/guides/python-scgi.md',
  'docs/guides/http-and-websockets.md', 'examples/php-site/README.md', 'examples/multi-tenant/README.md',
]

function blocks (text: string, lang: string): string[] {
  const out: string[] = []
  const re = new RegExp('^```' + lang + '\\n([\\s\\S]*?)^```', 'gm')
  for (let m = re.exec(text); m !== null; m = re.exec(text)) out.push(m[1])
  return out
}

t.test('YAML configs in the docs validate', async (t) => {
  guardLeaks(t)
  const dir = tempDir(t, 'pc-docs-')
  let checked = 0
  for (const doc of DOCS) {
    const text = readFileSync(join(root, doc), 'utf8')
    for (const [i, yaml] of blocks(text, 'yaml').entries()) {
      let value: unknown
      // Fragments (route keys shown alone) must at least be YAML.
      t.doesNotThrow(() => { value = parse(yaml) }, `${doc} yaml block ${i} parses`)
      if (typeof value !== 'object' || value === null || !('routes' in value)) continue
      const file = join(dir, `block-${checked}.yaml`)
      writeFileSync(file, yaml)
      const r = await loadConfig(file, { env: {} })
      t.same(r.issues.map((x) => `${x.path}: ${x.message}`), [], `${doc} yaml block ${i} is a valid config`)
      checked++
    }
  }
  t.ok(checked >= 7, `${checked} complete configs validated`)
})

t.test('relative links resolve', async (t) => {
  const broken: string[] = []
  for (const doc of DOCS) {
    const text = readFileSync(join(root, doc), 'utf8')
    for (const m of text.matchAll(/\]\(([^)#\s]+)(#[^)]*)?\)/g)) {
      const target = m[1]
      if (/^[a-z]+:/.test(target)) continue
      if (!existsSync(resolve(dirname(join(root, doc)), target))) broken.push(`${doc}: ${target}`)
    }
  }
  t.same(broken, [], 'no broken relative links')
})

/** GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens. */
function slug (heading: string): string {
  return heading.trim().toLowerCase().replace(/[^\p{L}\p{N}\s_-]/gu, '').replace(/\s/g, '-')
}

t.test('docs/README.md: its anchors resolve, and it lists every document in docs/', async (t) => {
  const index = readFileSync(join(root, 'docs/README.md'), 'utf8')
  const badAnchors: string[] = []
  for (const m of index.matchAll(/\]\(([^)#\s]+\.md)#([^)]+)\)/g)) {
    const text = readFileSync(resolve(join(root, 'docs'), m[1]), 'utf8')
    const anchors = new Set([...text.matchAll(/^#{1,6} (.+)$/gm)].map((h) => slug(h[1])))
    if (!anchors.has(m[2])) badAnchors.push(`${m[1]}#${m[2]}`)
  }
  t.same(badAnchors, [], 'every #anchor names a heading of its document')
  // The "Every document" table: one row per .md under docs/ (the index itself aside).
  const table = index.slice(index.indexOf('## Every document'))
  const rows = [...table.matchAll(/^\| \[([^\]]+)\]\(([^)]+)\) \|/gm)].map((m) => m[2])
  const files: string[] = []
  const walk = (dir: string, rel: string): void => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      if (e.isDirectory()) walk(join(dir, e.name), rel + e.name + '/')
      else if (e.name.endsWith('.md') && rel + e.name !== 'README.md') files.push(rel + e.name)
    }
  }
  walk(join(root, 'docs'), '')
  t.same([...rows].sort(), files.sort(), 'the table lists exactly the documents in docs/')
})
