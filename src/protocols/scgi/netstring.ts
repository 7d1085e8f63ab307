/**
 * The SCGI request head: one netstring of NUL-separated name/value pairs (SCGI spec §3,
 * RELIABILITY §2.12). nginx writes it the same way: `"%ui:CONTENT_LENGTH%Z%V%Z"` first.
 *
 *   <len>":" "CONTENT_LENGTH" NUL <digits> NUL "SCGI" NUL "1" NUL (name NUL value NUL)* ","
 */
import { ProxyError } from '../../core/errors.js'

/**
 * Encode the SCGI request head. CONTENT_LENGTH comes first and is always present, even "0"
 * (§3 MUST); `SCGI=1` follows. A NUL in a name or value cannot be encoded → ERR_BAD_HEADER_VALUE
 * (400, before any connection is made); so can't an empty name (`name ::= notnull+`).
 * Empty values are sent (`value ::= notnull*`; QUERY_STRING="" is an RFC 3875 §4.1.7 MUST).
 *
 * One string, one pass, one Buffer: this runs once per request (SCGI has no connection reuse).
 */
export function encodeScgiHead (env: Readonly<Record<string, string>>, contentLength: number): Buffer {
  if (!Number.isSafeInteger(contentLength) || contentLength < 0) {
    throw new ProxyError('ERR_INTERNAL', `invalid SCGI CONTENT_LENGTH ${contentLength}`)
  }
  let text = `CONTENT_LENGTH\0${contentLength}\0SCGI\x001\0`
  for (const name in env) {
    // Own keys only: a polluted Object.prototype must never reach the backend as a variable.
    if (!Object.hasOwn(env, name)) continue
    const value = env[name]
    // Names are case-sensitive in SCGI, but CGI meta-variables are not (RFC 3875 §4.1):
    // a `content_length` variant must not sneak a second length past the backend.
    if (isOwn(name)) continue
    if (name === '') throw new ProxyError('ERR_BAD_HEADER_VALUE', 'empty SCGI header name', { phase: 'request' })
    if (name.includes('\0') || value.includes('\0')) {
      throw new ProxyError('ERR_BAD_HEADER_VALUE', `NUL in SCGI header ${JSON.stringify(name.replace(/\0/g, '\\0'))}`, { phase: 'request' })
    }
    text += `${name}\0${value}\0`
  }
  // The usual 7-bit environment: characters are bytes, one Buffer for the whole netstring.
  if (!NOT_ASCII.test(text)) return Buffer.from(`${text.length}:${text},`, 'latin1')
  // Env values are Unicode text (buildCgiEnv decodes UTF-8 header bytes); the wire is UTF-8.
  const payload = Buffer.from(text, 'utf8')
  return Buffer.concat([Buffer.from(`${payload.length}:`, 'latin1'), payload, COMMA])
}

/** CONTENT_LENGTH or SCGI in any case: the variables the adapter writes itself, first and once. */
function isOwn (name: string): boolean {
  if (name.length === 14) return name.toUpperCase() === 'CONTENT_LENGTH'
  return name.length === 4 && name.toUpperCase() === 'SCGI'
}

const NOT_ASCII = /[^\x00-\x7f]/
const COMMA = Buffer.from(',', 'latin1')
