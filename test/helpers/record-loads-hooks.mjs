/**
 * Module hooks of record-loads.mjs: append each resolved URL to the record file, and once more as
 * `esm-commonjs <url>` for a CommonJS file that came in through `import` (Node parses such a file
 * for its export names; src/lazy.ts says what that costs).
 */
import { appendFileSync } from 'node:fs'

let out

export function initialize (data) {
  out = data.out
}

export async function resolve (specifier, context, next) {
  const r = await next(specifier, context)
  appendFileSync(out, `${r.url}\n`)
  return r
}

export async function load (url, context, next) {
  const r = await next(url, context)
  if (r.format === 'commonjs') appendFileSync(out, `esm-commonjs ${url}\n`)
  return r
}
