// The floors' one response-head parser (bench only): the bytes before the blank line, as an HTTP
// status line + headers or a CGI head with Status:. Hop-by-hop Connection/Keep-Alive are dropped.
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
