/**
 * Config files with positions: YAML (JSON is valid YAML) parsed to a Document plus a LineCounter,
 * so any issue path (`/routes/2/match/prefix`) maps back to `file:line:col`. An unknown key points
 * at the key itself, a missing one at its parent, a bad value at the value.
 */
import { isUtf8 } from 'node:buffer'
import { constants } from 'node:fs'
import { open } from 'node:fs/promises'
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
  /** The document holds nothing (no bytes, only comments, a bare `---` or `null`): value is {}. */
  readonly empty: boolean
}

export function displayName (file: string): string {
  const rel = relative(process.cwd(), file)
  return rel !== '' && !rel.startsWith('..') ? rel : file
}

/** Parse one file; syntax errors come back as issues with their position. */
export async function parseFile (file: string): Promise<{ parsed: ParsedFile | null, issues: ConfigIssue[] }> {
  const display = displayName(file)
  let bytes: Buffer
  try { bytes = await readBytes(file) } catch (err) {
    return { parsed: null, issues: [{ path: '', message: `cannot read ${display}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, source: display }] }
  }
  const text = bytes.toString('utf8')
  // Decoding puts U+FFFD for a bad byte and goes on: a Latin-1 `docroot: /srv/café` would load as
  // a directory that does not exist. The first bad byte is refused at its line and column.
  if (!isUtf8(bytes)) {
    const bad = firstInvalidUtf8(bytes, text)
    const line = text.slice(0, bad.at).split('\n')
    return { parsed: null, issues: [{ path: '', message: `syntax: not valid UTF-8 (byte 0x${bad.byte.toString(16).padStart(2, '0')}): a config file is UTF-8 (save it as UTF-8; in Latin-1, an é is the one byte 0xe9)`, source: `${display}:${line.length}:${line[line.length - 1].length + 1}` }] }
  }
  const { LineCounter, parseDocument } = yaml()
  const lines = new LineCounter()
  // JSON is read by the YAML parser (for positions), which would take JSONC as YAML: a commented-out
  // `// "127.0.0.1:8",` became a backend of that name. A .json file must be JSON.
  if (/\.json$/i.test(file)) {
    const bad = jsonError(text)
    if (bad !== null) {
      const line = text.slice(0, bad.at).split('\n')
      const pos = { line: line.length, col: line[line.length - 1].length + 1 }
      return { parsed: null, issues: [{ path: '', message: `syntax: not valid JSON: ${bad.message} (a .json file is strict JSON: no comments, trailing commas or single quotes; a .yaml file allows them)`, source: `${display}:${pos.line}:${pos.col}` }] }
    }
  }
  // yaml composes a document recursively, several frames per level: a few hundred levels
  // overflow the stack, reported twice (two neighbouring offsets); and in a process that had
  // parsed such a file before (a reload), the overflow hit V8's regex compiler, which aborts the
  // process (FATAL ERROR: RegExpCompiler Allocation failed). Its CST parser keeps a stack of its own:
  // nesting is measured there first, and a file past MAX_PARSE_DEPTH is never composed.
  const scanned = new LineCounter()
  const tooDeepAt = cstTooDeep(text, scanned)
  if (tooDeepAt !== null) {
    const pos = scanned.linePos(tooDeepAt)
    return { parsed: null, issues: [{ path: '', message: `syntax: the file nests too deeply to parse (more than ${MAX_PARSE_DEPTH} levels)`, source: `${display}:${pos.line}:${pos.col}` }] }
  }
  let doc: Document
  try {
    // resolveKnownTags: false: YAML 1.1's !!binary, !!timestamp, !!set, !!omap and !!pairs would
    // make a Buffer, a Date, a Set or a Map where the schema expects plain data; unresolved, they are
    // refused below with every other tag the core schema does not know.
    doc = parseDocument(text, { lineCounter: lines, uniqueKeys: true, prettyErrors: false, merge: true, resolveKnownTags: false })
  } catch (err) {
    // yaml's parser recurses once per level of block nesting: a few thousand levels overflow the
    // stack, which it throws instead of reporting (a crash with a stack trace, exit 1).
    if (!(err instanceof RangeError)) throw err
    return { parsed: null, issues: [{ path: '', message: `syntax: the file nests too deeply to parse (${err.message})`, source: display }] }
  }
  if (doc.errors.length > 0) {
    return {
      parsed: null,
      issues: doc.errors.map((e) => {
        const pos = lines.linePos(e.pos[0])
        const first = e.message.split('\n')[0]
        return { path: '', message: /^Maximum call stack/.test(first) ? `syntax: the file nests too deeply to parse (${first})` : `syntax: ${first}`, source: `${display}:${pos.line}:${pos.col}` }
      }),
    }
  }
  // An unknown tag (`!!js/function`, `!env HOST`) is only a warning to yaml, which then reads the
  // value as if untagged: the operator meant something else than the string that would be used.
  const tags = unknownTags(doc, lines, display)
  if (tags.length > 0) return { parsed: null, issues: tags }
  let value: unknown
  let empty = false
  try {
    value = doc.toJS({ maxAliasCount: MAX_ALIAS_COUNT })
    empty = value === null || value === undefined
    if (empty) value = {}
  } catch (err) {
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
  const deep = tooDeep(value)
  if (deep !== null) {
    const message = deep.cycle ? 'syntax: a YAML alias refers to a node that contains it (the value would be infinite)' : `syntax: nested deeper than ${MAX_DEPTH} levels`
    return { parsed: null, issues: [{ path: deep.at.map((k) => `/${escapeKey(String(k))}`).join(''), message, source: positionOf({ file, display, doc, lines, value, empty }, deep.at) }] }
  }
  return { parsed: { file, display, doc, lines, value, empty }, issues: [] }
}

/** Each node with a tag the core schema cannot resolve: an issue at its path and position. */
function unknownTags (doc: Document, lines: LineCounter, display: string): ConfigIssue[] {
  const unresolved = doc.warnings.filter((w) => w.code === 'TAG_RESOLVE_FAILED')
  if (unresolved.length === 0) return []
  const { isPair, isScalar, isSeq, visit } = yaml()
  const out: ConfigIssue[] = []
  visit(doc, (_key, node, ancestors) => {
    const tag = (node as { tag?: string } | null)?.tag
    if (node === null || isPair(node) || tag === undefined || doc.schema.tags.some((x) => x.tag === tag)) return
    const segments: string[] = []
    ancestors.forEach((a, i) => {
      const next = ancestors[i + 1] ?? node
      if (isPair(a) && next === a.value) segments.push(isScalar(a.key) ? String(a.key.value) : String(a.key))
      else if (isSeq(a)) segments.push(String(a.items.indexOf(next)))
    })
    // The node's range starts after its tag: the position is the tag's own (yaml's warning).
    const start = (node as { range?: [number, number, number] | null }).range?.[0] ?? 0
    const pos = lines.linePos(unresolved.filter((w) => w.pos[0] <= start).at(-1)?.pos[0] ?? start)
    const shown = tag.replace(/^tag:yaml\.org,2002:/, '!!')
    out.push({
      path: segments.map((k) => `/${escapeKey(k)}`).join(''),
      message: `syntax: unknown YAML tag ${shown}: a config holds plain values (strings, numbers, booleans, lists, mappings); remove the tag`,
      source: `${display}:${pos.line}:${pos.col}`,
    })
  })
  return out
}

/**
 * JSON.parse's complaint about `text` (BOM allowed) and its offset; null when it is JSON. V8 names
 * the position for most errors; for the others ("Unexpected token '/'"), it is the shortest prefix
 * that fails other than by ending early, found by bisection.
 */
function jsonError (text: string): { message: string, at: number } | null {
  const body = text.startsWith('\ufeff') ? text.slice(1) : text
  const fails = (s: string): string | null => {
    try { JSON.parse(s); return null } catch (err) {
      // A RangeError (too deep for JSON.parse) is not a syntax error: the YAML stage reports nesting.
      return err instanceof SyntaxError ? err.message : null
    }
  }
  const message = fails(body)
  if (message === null) return null
  const named = / at position (\d+)/.exec(message)
  let at: number
  if (named !== null) at = Number(named[1])
  else {
    // A prefix that fails only because it stops: cut in a token, or complaining at its very end.
    const early = (m: string | null, len: number): boolean => m === null || /end of JSON input|Unterminated string/.test(m) || Number(/ at position (\d+)/.exec(m)?.[1] ?? -1) >= len
    let lo = 0
    let hi = body.length
    while (lo < hi) {
      const mid = (lo + hi) >> 1
      if (early(fails(body.slice(0, mid + 1)), mid + 1)) lo = mid + 1
      else hi = mid
    }
    at = lo
  }
  return { message: message.replace(/ (in|after) JSON at position \d+.*$/s, '').replace(/, (\.\.\.)?".*$/s, ''), at: at + text.length - body.length }
}

/** The largest config file read (a config is kilobytes; /dev/zero or a log file by mistake is not). */
export const MAX_CONFIG_BYTES = 16 * 1024 * 1024

/** Nesting measured before yaml composes a file (MAX_DEPTH is checked after, with the path). */
export const MAX_PARSE_DEPTH = 256

/**
 * The offset of the first collection nested deeper than MAX_PARSE_DEPTH in yaml's CST (block maps
 * and lists, flow collections), or null. The lexer and CST parser are iterative; so is this walk.
 */
function cstTooDeep (text: string, lines: LineCounter): number | null {
  type Tok = { type?: string, offset?: number, value?: Tok, key?: Tok | null, items?: Array<{ key?: Tok | null, value?: Tok }> }
  const stack: Array<{ tok: Tok, depth: number }> = []
  for (const tok of new (yaml().Parser)(lines.addNewLine).parse(text)) stack.push({ tok: tok as Tok, depth: 0 })
  while (stack.length > 0) {
    const { tok, depth } = stack.pop() as { tok: Tok, depth: number }
    const collection = tok.type === 'block-map' || tok.type === 'block-seq' || tok.type === 'flow-collection'
    const d = collection ? depth + 1 : depth
    if (d > MAX_PARSE_DEPTH) return tok.offset ?? 0
    if (tok.value != null) stack.push({ tok: tok.value, depth: d })
    for (const item of tok.items ?? []) {
      if (item.key != null) stack.push({ tok: item.key, depth: d })
      if (item.value != null) stack.push({ tok: item.value, depth: d })
    }
  }
  return null
}

/** Nesting a config never needs (the deepest schema path is ~8 levels); deeper would only overflow later recursive stages. */
export const MAX_DEPTH = 64

/**
 * A regular file's bytes, at most MAX_CONFIG_BYTES. O_NONBLOCK so that opening a FIFO does not
 * wait for a writer forever; anything but a regular file (FIFO, device, socket) is refused before
 * a byte is read, and a directory keeps its EISDIR.
 */
async function readBytes (file: string): Promise<Buffer> {
  const fh = await open(file, constants.O_RDONLY | constants.O_NONBLOCK)
  try {
    const st = await fh.stat()
    if (st.isDirectory()) throw Object.assign(new Error('is a directory'), { code: 'EISDIR' })
    if (!st.isFile()) {
      const kind = st.isFIFO() ? 'a FIFO' : st.isCharacterDevice() ? 'a character device' : st.isBlockDevice() ? 'a block device' : st.isSocket() ? 'a socket' : 'a special file'
      throw new Error(`not a regular file (${kind})`)
    }
    const tooBig = (): Error => new Error(`larger than ${MAX_CONFIG_BYTES / 1024 / 1024} MiB (not a config file?)`)
    if (st.size > MAX_CONFIG_BYTES) throw tooBig()
    // Sized by the stat, and grown should the file grow meanwhile, up to one byte past the limit
    // (a buffer of the limit's size for every file made a conf.d of 1500 files take 10 s).
    let buf = Buffer.allocUnsafe(Math.min(st.size, MAX_CONFIG_BYTES) + 1)
    let n = 0
    for (;;) {
      if (n === buf.length) {
        if (n > MAX_CONFIG_BYTES) throw tooBig()
        const bigger = Buffer.allocUnsafe(Math.min(n * 2, MAX_CONFIG_BYTES + 1))
        buf.copy(bigger, 0, 0, n)
        buf = bigger
      }
      const { bytesRead } = await fh.read(buf, n, buf.length - n, null)
      if (bytesRead === 0) break
      n += bytesRead
      if (n > MAX_CONFIG_BYTES) throw tooBig()
    }
    return buf.subarray(0, n)
  } finally {
    await fh.close()
  }
}

/**
 * Where the first invalid UTF-8 sequence of `bytes` starts (`text` is their decoding): the first
 * U+FFFD that does not stand for its own three bytes EF BF BD. Everything before it decoded as
 * written, so its byte offset is the UTF-8 length of the text before it.
 */
function firstInvalidUtf8 (bytes: Buffer, text: string): { at: number, byte: number } {
  let at = text.indexOf('\ufffd')
  while (at >= 0) {
    const off = Buffer.byteLength(text.slice(0, at))
    if (!(bytes[off] === 0xef && bytes[off + 1] === 0xbf && bytes[off + 2] === 0xbd)) return { at, byte: bytes[off] }
    at = text.indexOf('\ufffd', at + 1)
  }
  return { at: text.length, byte: bytes[bytes.length - 1] }
}

/**
 * The first value nested deeper than MAX_DEPTH, or inside itself (`x: &a [*a]`: yaml's toJS builds
 * a cyclic value), walked iteratively so that nothing here can overflow the stack.
 */
function tooDeep (value: unknown): { at: Array<string | number>, cycle: boolean } | null {
  const stack: Array<{ v: unknown, at: Array<string | number>, up: object[] }> = [{ v: value, at: [], up: [] }]
  while (stack.length > 0) {
    const { v, at, up } = stack.pop() as { v: unknown, at: Array<string | number>, up: object[] }
    if (typeof v !== 'object' || v === null) continue
    if (up.includes(v)) return { at, cycle: true }
    if (at.length >= MAX_DEPTH) return { at, cycle: false }
    const here = [...up, v]
    if (Array.isArray(v)) v.forEach((x, i) => stack.push({ v: x, at: [...at, i], up: here }))
    else for (const [k, x] of Object.entries(v)) stack.push({ v: x, at: [...at, k], up: here })
  }
  return null
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
