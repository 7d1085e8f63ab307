/**
 * A file nested past what the YAML parser can recurse (JSON is read by it too) is one problem: the
 * parser recorded "Maximum call stack size exceeded" at two neighbouring offsets (`deep.json:1:789`
 * and `1:788`, "2 problem(s)"). Worse, the second such file read by one process (the loop below; a
 * SIGHUP reload of `serve`) overflowed inside V8's regex compiler, which aborts the process (FATAL
 * ERROR: RegExpCompiler Allocation failed, SIGABRT). Nesting is now measured on yaml's CST before
 * the document is composed: one issue, at the first collection too deep, every time.
 */
import t from 'tap'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { guardLeaks } from '../helpers/leaks.js'
import { tempDir } from '../helpers/tmp.js'
import { runCli } from '../cli/run.js'
import { loadConfig } from '../../src/config/load.js'

const deepList = `${'['.repeat(10_000)}${']'.repeat(10_000)}\n`
const deepMap = `${'{"a":'.repeat(10_000)}1${'}'.repeat(10_000)}\n`

t.test('a file nested 10 000 deep is one problem', async (t) => {
  const dir = tempDir(t, 'pc-audit36-deep-')
  const cases: Array<[string, string]> = [
    ['list.json', deepList], ['list.yaml', deepList], ['map.json', deepMap], ['map.yaml', deepMap],
    ['routes.json', `{"routes": [{"protocol": "http", "backends": ["127.0.0.1:9"], "x": ${deepList.trim()}}]}`],
  ]
  // Each file twice: the second deep parse in a process is the one that aborted it.
  for (const [name, text] of [...cases, ...cases]) {
    writeFileSync(join(dir, name), text)
    const r = await loadConfig(join(dir, name), { env: {} })
    t.equal(r.issues.length, 1, `${name}: one issue`)
    t.match(r.issues[0], { path: '', message: 'syntax: the file nests too deeply to parse (more than 256 levels)', source: new RegExp(`${name.replace('.', '\\.')}:1:\\d+$`) }, `${name}: nests too deeply, at its line`)
  }
})

t.test('check: one line, exit 2', async (t) => {
  guardLeaks(t)
  const dir = tempDir(t, 'pc-audit36-deep-cli-')
  writeFileSync(join(dir, 'deep.yaml'), deepList)
  const r = await runCli(['check', join(dir, 'deep.yaml')])
  t.equal(r.code, 2, 'exit 2')
  t.equal(r.stderr.match(/nests too deeply/g)?.length, 1, 'said once')
  t.match(r.stderr, /deep\.yaml: 1 problem\(s\)/)
  t.notMatch(r.stderr, /\n\s+at |TypeError|RangeError/)
})
