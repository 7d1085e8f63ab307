/**
 * Config issues as operators read them (nginx -t style): one line per problem, where it is, what
 * is wrong, what was found and what was expected. `--explain` adds the field's documentation,
 * taken from the schema descriptions so the text never drifts from the code.
 */
import { readFileSync } from 'node:fs'
import { boundValues, type ConfigIssue } from '../core/errors.js'
import { escapeKey, pointerSegments } from './locate.js'

type SchemaNode = Record<string, unknown>

let published: SchemaNode | undefined

/**
 * The published JSON Schema (generated from OperatorConfigSchema, kept equal by a test): the same
 * descriptions and defaults without loading TypeBox into the CLI, which imports this module.
 */
function operatorSchema (): SchemaNode {
  return (published ??= JSON.parse(readFileSync(new URL('../../schema/proxycore.schema.json', import.meta.url), 'utf8')) as SchemaNode)
}

function show (v: unknown): string {
  // JSON has no Infinity or NaN (YAML's .inf, .nan, 1e400): JSON.stringify would say null.
  const s = typeof v === 'number' && !Number.isFinite(v) ? String(v) : JSON.stringify(v) ?? String(v)
  return s.length > 60 ? `${s.slice(0, 57)}...` : s
}

/**
 * Text as one line: a line break or another control character (C0, DEL, C1, U+2028/9) shows
 * escaped as in JSON (`\n`, `\u001b`). Paths and messages quote the file's keys and values (a
 * regex, an include pattern): raw, a line break forged a problem line of its own and ESC reached
 * the operator's terminal.
 */
function oneLine (text: string): string {
  return text.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g, (c) => {
    const json = JSON.stringify(c).slice(1, -1)
    return json !== c ? json : `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`
  })
}

export function issueLine (i: ConfigIssue): string {
  const where = i.source !== undefined && i.source !== '' ? `${i.source}: ` : ''
  const extra = [
    i.found !== undefined && !i.message.includes(show(i.found)) ? `found ${show(i.found)}` : '',
    i.expected !== undefined && !i.message.includes(i.expected) ? `expected ${i.expected}` : '',
  ].filter((s) => s !== '').join('; ')
  return oneLine(`${where}${boundValues(`${i.path || '/'}: ${i.message}${extra !== '' ? ` (${extra})` : ''}`)}`)
}

/**
 * The schema node describing `path`, following objects, records, lists and unions. A map key its
 * pattern refuses (a spawn named `bad name`) has no schema, like an unknown key of an object.
 */
export function schemaAt (path: string, root: SchemaNode = operatorSchema()): Record<string, unknown> | null {
  let node: Record<string, unknown> | null = root
  for (const seg of pointerSegments(path)) {
    if (node === null) return null
    const candidates: Array<Record<string, unknown>> = Array.isArray(node.anyOf) ? node.anyOf as Array<Record<string, unknown>> : [node]
    let next: Record<string, unknown> | null = null
    for (const c of candidates) {
      const props = c.properties as Record<string, Record<string, unknown>> | undefined
      const pattern = c.patternProperties as Record<string, Record<string, unknown>> | undefined
      if (typeof seg === 'string' && props?.[seg] !== undefined) next = props[seg]
      else if (typeof seg === 'string' && pattern !== undefined) next = Object.entries(pattern).find(([re]) => new RegExp(re).test(seg))?.[1] ?? null
      else if (typeof seg === 'number' && c.items !== undefined) next = c.items as Record<string, unknown>
      if (next !== null) break
    }
    node = next
  }
  return node
}

/** Documentation lines for an issue's field (nearest described ancestor). */
export function explain (i: ConfigIssue): string[] {
  const segs = pointerSegments(i.path)
  for (let n = segs.length; n > 0; n--) {
    const path = `/${segs.slice(0, n).map((x) => escapeKey(String(x))).join('/')}`
    const s = schemaAt(path)
    if (s !== null && typeof s.description === 'string') {
      const dflt = s.default !== undefined ? ` Default: ${JSON.stringify(s.default)}.` : ''
      return [`    ${oneLine(path)}: ${s.description}${dflt}`]
    }
  }
  return []
}
