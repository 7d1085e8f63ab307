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
