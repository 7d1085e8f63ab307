/**
 * The `Range` header of a static route (RFC 9110 §14.1.2, §14.2): which byte ranges of a file of
 * `size` bytes a request asks for. The rules of the `range-parser` package (express's `send`) that
 * the adapter used before, but for one: a suffix longer than the file (`bytes=-500` of a 10-byte
 * file) is the whole file, as RFC 9110 §14.1.3 and nginx have it, where range-parser found the
 * range unsatisfiable (416).
 */

/** One range, `end` inclusive, as in Content-Range. */
export interface ByteRange { start: number, end: number }

/** The header is not a byte-range set this parser reads (ignored: the whole file, RFC 9110 §14.2). */
export const RANGE_MALFORMED = -2
/** No range of the set overlaps the file (416). */
export const RANGE_UNSATISFIABLE = -1

const DIGITS = /^\d+$/

/**
 * The ranges of `header` over `size` bytes, overlapping and adjacent ones merged (RFC 9110 §14.2
 * allows it), in the order the client named them (a merged range takes the place of its first
 * part, as §14.6 asks of the parts of a multipart answer); RANGE_UNSATISFIABLE when none lies in
 * the file; RANGE_MALFORMED for another unit or a syntax error.
 */
export function parseRanges (size: number, header: string): ByteRange[] | typeof RANGE_MALFORMED | typeof RANGE_UNSATISFIABLE {
  const eq = header.indexOf('=')
  // Unit names are compared without case (§14.1: `Bytes=0-1` is a range, as nginx reads it).
  if (eq !== 5 || header.slice(0, eq).toLowerCase() !== 'bytes') return RANGE_MALFORMED
  const specs = header.slice(eq + 1).split(',')
  const found: Array<ByteRange & { index: number }> = []
  let named = 0
  for (let i = 0; i < specs.length; i++) {
    const spec = specs[i]
    // An empty list element (`bytes=0-1,`, `bytes=,0-1`) is ignored (§5.6.1.2); a set of none is malformed.
    if (spec.trim() === '') continue
    named++
    const dash = spec.indexOf('-')
    if (dash === -1) return RANGE_MALFORMED
    const first = spec.slice(0, dash).trim()
    const last = spec.slice(dash + 1).trim()
    let start: number
    let end: number
    if (first === '') {
      // A suffix: the last `last` bytes, all of them when the file is shorter (§14.1.3).
      if (!DIGITS.test(last)) return RANGE_MALFORMED
      const n = Number(last)
      start = Math.max(0, size - n)
      end = n === 0 ? -1 : size - 1
    } else {
      if (!DIGITS.test(first) || (last !== '' && !DIGITS.test(last))) return RANGE_MALFORMED
      start = Number(first)
      end = last === '' ? size - 1 : Math.min(Number(last), size - 1)
    }
    // Past the end, an empty suffix, or last < first (§14.1.1 calls it invalid; §15.5.17 allows a
    // 416 for it): no bytes.
    if (start > end) continue
    found.push({ start, end, index: i })
  }
  if (named === 0) return RANGE_MALFORMED
  if (found.length === 0) return RANGE_UNSATISFIABLE
  return merge(found)
}

/** Overlapping and adjacent ranges as one, each where the first of its parts was named. */
function merge (found: Array<ByteRange & { index: number }>): ByteRange[] {
  const byStart = found.sort((a, b) => a.start - b.start)
  let j = 0
  for (let i = 1; i < byStart.length; i++) {
    const r = byStart[i]
    const cur = byStart[j]
    if (r.start > cur.end + 1) {
      byStart[++j] = r
    } else {
      if (r.end > cur.end) cur.end = r.end
      if (r.index < cur.index) cur.index = r.index
    }
  }
  byStart.length = j + 1
  return byStart.sort((a, b) => a.index - b.index).map(({ start, end }) => ({ start, end }))
}
