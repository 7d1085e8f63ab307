/**
 * Test users with fixed ids (a `{ name, id }` literal in a test file) are created by their file with
 * `useradd -u <id>` and deleted at its end. tap runs two files at once (and other runs may share the
 * machine), so two files that give one id to two names fail whichever comes second ("useradd: UID
 * 2011 is not unique"). Each fixed id names one user, each user one id, and all of them lie in
 * 2001-2199: the files that pick free ids at run time (acceptance-users, acceptance-ranges, the
 * multi-user guide tests) stay out of that band, so they cannot take an id a moment before the file
 * that owns it creates its user.
 */
import t from 'tap'
import { readdirSync, readFileSync } from 'node:fs'
import { join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = fileURLToPath(new URL('../../', import.meta.url))

function sources (dir: string): string[] {
  const out: string[] = []
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name)
    if (e.isDirectory()) { if (e.name !== 'node_modules' && e.name !== 'fixtures') out.push(...sources(p)) } else if (/\.(ts|mts|mjs)$/.test(e.name)) out.push(p)
  }
  return out
}

t.test('each fixed test-user id names one user, in 2001-2199', async (t) => {
  const byId = new Map<number, Set<string>>()
  const byName = new Map<string, Set<number>>()
  const where = new Map<number, Set<string>>()
  for (const file of [...sources(join(root, 'test')), ...sources(join(root, 'examples'))]) {
    for (const m of readFileSync(file, 'utf8').matchAll(/\{\s*name:\s*'([a-z][a-z0-9_-]*)',\s*id:\s*(\d+)\s*\}/g)) {
      const [name, id] = [m[1], Number(m[2])]
      byId.set(id, (byId.get(id) ?? new Set()).add(name))
      byName.set(name, (byName.get(name) ?? new Set()).add(id))
      where.set(id, (where.get(id) ?? new Set()).add(relative(root, file)))
    }
  }
  t.ok(byId.size >= 20, `the fixed users were found (${byId.size} ids)`)
  const shared = [...byId].filter(([, names]) => names.size > 1).map(([id, names]) => `${id}: ${[...names].join(', ')} (${[...where.get(id) ?? []].join(', ')})`)
  t.same(shared, [], 'no id given to two names')
  t.same([...byName].filter(([, ids]) => ids.size > 1).map(([name, ids]) => `${name}: ${[...ids].join(', ')}`), [], 'no name given two ids')
  t.same([...byId.keys()].filter((id) => id < 2001 || id > 2199).sort(), [], 'every fixed id in 2001-2199')
})

t.test('ids picked at run time start above the fixed band', async (t) => {
  const picks: string[] = []
  let found = 0
  for (const file of [...sources(join(root, 'test')), ...sources(join(root, 'examples'))]) {
    // `for (let id = 2900 + (process.pid % 90); ...) if (idFree(id))`, or the `while` on the next line.
    for (const m of readFileSync(file, 'utf8').matchAll(/let id = (\d+)[^\n]*(?:\n[^\n]*)?\bidFree\(id\)/g)) {
      found++
      if (Number(m[1]) < 2200) picks.push(`${relative(root, file)}: from ${m[1]}`)
    }
  }
  t.ok(found >= 8, `the run-time picks were found (${found})`)
  t.same(picks, [], 'no run-time pick starts in 2001-2199')
})
