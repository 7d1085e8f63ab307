/**
 * The incomplete UTF-8 character a chunk may end with. Pipes and FastCGI records cut a stream
 * wherever a write or a size limit fell; a consumer that decodes each chunk on its own turns a
 * character cut in two into two U+FFFD. Holding back these bytes (at most 3) for the next chunk
 * keeps it whole. (`StringDecoder` does the same, but hands out strings; the stderr path keeps
 * bytes until the core decodes them.)
 */
export function incompleteUtf8Tail (b: Uint8Array): number {
  for (let i = 1; i <= 3 && i <= b.length; i++) {
    const c = b[b.length - i]
    if ((c & 0xc0) === 0x80) continue
    const need = c < 0xc2 ? 1 : c < 0xe0 ? 2 : c < 0xf0 ? 3 : c < 0xf5 ? 4 : 1
    return need > i ? i : 0
  }
  return 0
}

/** Carries the incomplete character one chunk ends with over to the next (see incompleteUtf8Tail). */
export class Utf8Carry {
  private held: Buffer | null = null

  /**
   * `chunk` after the bytes held from the call before, without the incomplete character it ends
   * with: held for the next call, or dropped when `last` (a cap cut the stream there).
   */
  take (chunk: Buffer, last: boolean): Buffer {
    const whole = this.held === null ? chunk : Buffer.concat([this.held, chunk])
    const cut = incompleteUtf8Tail(whole)
    this.held = cut > 0 && !last ? Buffer.from(whole.subarray(whole.length - cut)) : null
    return cut > 0 ? whole.subarray(0, whole.length - cut) : whole
  }

  /**
   * The stream ended: the bytes still held (an incomplete character no next chunk will finish; at
   * most 3, empty when none), handed back rather than dropped. The carry is empty afterwards.
   */
  end (): Buffer {
    const held = this.held ?? Buffer.alloc(0)
    this.held = null
    return held
  }
}

/** A lone low surrogate U+DC80-U+DCFF: a header byte that was not UTF-8 (src/core/cgi/env.ts headerText). */
const RAW_BYTE = /(?<![\uD800-\uDBFF])[\uDC80-\uDCFF]/
const RAW_BYTES = /(?<![\uD800-\uDBFF])[\uDC80-\uDCFF]/g

/** `text` holds header bytes that were not UTF-8 (escaped by headerText): write it with envBytes. */
export function hasRawBytes (text: string): boolean {
  return RAW_BYTE.test(text)
}

/**
 * `text` as it goes on a CGI-family wire (FastCGI and SCGI params, the fork server's frame): UTF-8,
 * except that an escaped header byte (src/core/cgi/env.ts headerText) is that one byte again. For the rare text that
 * is not 7-bit: the encoders' fast paths never call it.
 */
export function envBytes (text: string): Buffer {
  const parts: Buffer[] = []
  let from = 0
  for (const m of text.matchAll(RAW_BYTES)) {
    if (m.index > from) parts.push(Buffer.from(text.slice(from, m.index), 'utf8'))
    parts.push(Buffer.of(text.charCodeAt(m.index) & 0xff))
    from = m.index + 1
  }
  if (from === 0) return Buffer.from(text, 'utf8')
  if (from < text.length) parts.push(Buffer.from(text.slice(from), 'utf8'))
  return Buffer.concat(parts)
}
