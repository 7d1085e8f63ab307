/**
 * The bytes of `seq 1 inf` (1\n2\n3\n…), truncated: the --big CGI download (a shell script cannot
 * reproduce lib/gen.mjs cheaply, but coreutils seq is deterministic, fast and never periodic).
 */
import { createHash } from 'node:crypto'

/** Yields Buffers of ~64 KiB whose concatenation is the first `total` bytes of `seq 1 inf`. */
export function * seqChunks (total) {
  let left = total
  let i = 1
  while (left > 0) {
    const parts = []
    let len = 0
    while (len < 65536) { const s = `${i++}\n`; parts.push(s); len += s.length }
    let b = Buffer.from(parts.join(''), 'latin1')
    if (b.length > left) b = b.subarray(0, left)
    left -= b.length
    yield b
  }
}

export function seqSha256 (total) {
  const h = createHash('sha256')
  for (const b of seqChunks(total)) h.update(b)
  return h.digest('hex')
}
