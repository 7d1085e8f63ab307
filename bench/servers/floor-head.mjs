// The floors' shared helpers (bench only). parseHead, their one response-head parser: the bytes
// before the blank line, as an HTTP status line + headers or a CGI head with Status:. Hop-by-hop
// Connection/Keep-Alive are dropped.
/** `buf` holds the whole head; `end` is the index of its \r\n\r\n. */
export function parseHead (buf, end) {
  const lines = buf.subarray(0, end).toString('latin1').split('\r\n')
  let status = 200
  let first = 0
  if (lines[0].startsWith('HTTP/')) { status = Number(lines[0].slice(9, 12)); first = 1 }
  const headers = {}
  for (let i = first; i < lines.length; i++) {
    const colon = lines[i].indexOf(':')
    const name = lines[i].slice(0, colon).toLowerCase()
    const value = lines[i].slice(colon + 1).trim()
    if (name === 'status') status = parseInt(value, 10)
    else if (name !== 'connection' && name !== 'keep-alive') headers[name] = value
  }
  return { status, headers }
}

// A large chunk is a full 64 KiB read with the rest of the response right behind it: hold the
// client socket's writes to the end of this loop iteration's I/O, so a 64 KiB body leaves in one
// writev instead of two (proxycore does the same).
export function holdLarge (res, chunk) {
  const s = res.socket
  if (chunk.length >= 16384 && s !== null && s.writableCorked === 0) { s.cork(); setImmediate(() => s.uncork()) }
}
