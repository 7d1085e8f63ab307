// Writes docs/reference/errors.md from the error table (src/core/errors.ts, via the build).
// Usage: npm run build && node scripts/gen-errors-doc.mjs   (or: npm run docs:errors)
import { readFileSync, writeFileSync } from 'node:fs'
import { ERRORS } from '../dist/core/errors.js'

export function renderErrorsTable (errors) {
  const rows = Object.entries(errors).map(([code, e]) => `| \`${code}\` | ${e.status} | ${e.message} | ${e.action} |`)
  return ['| code | status | what happened | operator action |', '|---|---:|---|---|', ...rows].join('\n')
}

const file = new URL('../docs/reference/errors.md', import.meta.url)
const doc = readFileSync(file, 'utf8')
const start = doc.indexOf('<!-- errors:start -->')
const end = doc.indexOf('<!-- errors:end -->')
if (start < 0 || end < 0) throw new Error('markers missing in docs/reference/errors.md')
writeFileSync(file, `${doc.slice(0, start)}<!-- errors:start -->\n${renderErrorsTable(ERRORS)}\n${doc.slice(end)}`)
console.log(`docs/reference/errors.md: ${Object.keys(ERRORS).length} codes`)
