/**
 * Preload (`node --import`) that records every module a process loads into the file named by
 * $RECORD_LOADS (nothing without it), one URL a line: ES modules as the resolve hook sees them
 * (record-loads-hooks.mjs, written before the import completes), CommonJS modules from
 * require.cache when the process exits (in Node 20 the hooks do not see require()).
 */
import { appendFileSync } from 'node:fs'
import { createRequire, register } from 'node:module'
import { pathToFileURL } from 'node:url'

const out = process.env.RECORD_LOADS
if (out !== undefined) {
  register('./record-loads-hooks.mjs', import.meta.url, { data: { out } })
  const cache = createRequire(import.meta.url).cache
  process.on('exit', () => {
    appendFileSync(out, Object.keys(cache).map((f) => `${pathToFileURL(f).href}\n`).join(''))
  })
}
