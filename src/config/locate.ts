/**
 * Config files with positions: YAML (JSON is valid YAML) parsed to a Document plus a LineCounter,
 * so any issue path (`/routes/2/match/prefix`) maps back to `file:line:col`. An unknown key points
 * at the key itself, a missing one at its parent, a bad value at the value.
 */
import { readFile } from 'node:fs/promises'
import { relative } from 'node:path'
import type { Document, LineCounter } from 'yaml'
import { lazy } from '../lazy.js'

const yaml = lazy<typeof import('yaml')>('yaml')
import type { ConfigIssue } from '../core/errors.js'

export interface ParsedFile {
  /** Absolute path. */
  readonly file: string
  /** Shown to operators: relative to the cwd when shorter. */
  readonly display: string
  readonly doc: Document
  readonly lines: LineCounter
  readonly value: unknown
}

export function displayName (file: string): string {
  const rel = relative(process.cwd(), file)
  return rel !== '' && !rel.startsWith('..') ? rel : file
}

/** Parse one file; syntax errors come back as issues with their position. */
export async function parseFile (file: string): Promise<{ parsed: ParsedFile | null, issues: ConfigIssue[] }> {
  const display = displayName(file)
  let text: string
  try { text = await readFile(file, 'utf8') } catch (err) {
    return { parsed: null, issues: [{ path: '', message: `cannot read ${display}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, source: display }] }
  }
  const { LineCounter, parseDocument } = yaml()
  const lines = new LineCounter()
  const doc = parseDocument(text, { lineCounter: lines, uniqueKeys: true, prettyErrors: false, merge: true })
  if (doc.errors.length > 0) {
    return {
      parsed: null,
      issues: doc.errors.map((e) => {
        const pos = lines.linePos(e.pos[0])
        return { path: '', message: `syntax: ${e.message.split('\n')[0]}`, source: `${display}:${pos.line}:${pos.col}` }
      }),
    }
  }
  let value: unknown
  try { value = doc.toJS({ maxAliasCount: MAX_ALIAS_COUNT }) ?? {} } catch (err) {
    // yaml throws (ReferenceErrors) for an unresolved alias and when aliases expand past the limit:
    // a "billion laughs" file would otherwise take the memory of the process reading it.
    const bomb = /^Excessive alias count/.test((err as Error).message)
    let where: number | undefined
    yaml().visit(doc, {
      Alias (_, node) {
        if (!bomb && node.resolve(doc) !== undefined) return undefined
        where = node.range?.[0]
        return yaml().visit.BREAK
      },
    })
    const pos = where === undefined ? null : lines.linePos(where)
    return {
      parsed: null,
      issues: [{
        path: '',
        message: bomb ? `syntax: YAML aliases expand too far (an alias bomb?): at most ${MAX_ALIAS_COUNT} alias uses, weighted by nesting` : `syntax: ${(err as Error).message}`,
        source: pos === null ? display : `${display}:${pos.line}:${pos.col}`,
      }],
    }
  }
  return { parsed: { file, display, doc, lines, value }, issues: [] }
}

/** yaml's limit on alias uses (an alias of a node that holds aliases counts as many). */
const MAX_ALIAS_COUNT = 100

/** A key as one JSON Pointer segment (RFC 6901): `b/c~d` -> `b~1c~0d`, as issue paths write it. */
export function escapeKey (key: string): string {
  return key.replace(/~/g, '~0').replace(/\//g, '~1')
}

/** `/a/0/b~1c` -> ['a', 0, 'b/c'] (JSON Pointer, RFC 6901). */
export function pointerSegments (path: string): Array<string | number> {
  if (path === '' || path === '/') return []
  return path.slice(1).split('/').map((s) => {
    const v = s.replace(/~1/g, '/').replace(/~0/g, '~')
    return /^\d+$/.test(v) ? Number(v) : v
  })
}

type Ranged = { range?: [number, number, number] | null }

/** file:line:col of the deepest node on `segments` that exists; `keyOf` prefers the key of the last segment. */
export function positionOf (f: ParsedFile, segments: Array<string | number>, keyOf = false): string {
  for (let n = segments.length; n >= 0; n--) {
    const parent = segments.slice(0, Math.max(0, n - 1))
    if (keyOf && n === segments.length && n > 0) {
      const map = f.doc.getIn(parent, true)
      const { isMap, isScalar } = yaml()
      if (isMap(map)) {
        const pair = map.items.find((p) => isScalar(p.key) && String(p.key.value) === String(segments[n - 1]))
        const r = (pair?.key as Ranged | undefined)?.range
        if (r) return at(f, r[0])
      }
    }
    const node = (n === 0 ? f.doc.contents : f.doc.getIn(segments.slice(0, n), true)) as Ranged | null | undefined
    if (node?.range) return at(f, node.range[0])
  }
  return f.display
}

function at (f: ParsedFile, offset: number): string {
  const p = f.lines.linePos(offset)
  return `${f.display}:${p.line}:${p.col}`
}
