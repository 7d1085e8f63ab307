/**
 * X-Sendfile (lighttpd `x-sendfile`, Apache mod_xsendfile): a backend answers with
 * `X-Sendfile: /abs/path` (or `X-LIGHTTPD-send-file`) and the proxy sends that file itself, so PHP
 * can do access checks without streaming large files through its workers.
 *
 * Only files under the route's allow-listed roots are served, checked on the real path
 * (boundary-aware: `/srv/files2` is not inside `/srv/files`), so a backend cannot make the proxy
 * read anything else (lighttpd `x-sendfile-docroot`).
 */
import { createReadStream, type ReadStream } from 'node:fs'
import { open, realpath } from 'node:fs/promises'
import { isInside } from './cgi/script.js'
import { ProxyError } from './errors.js'
import type { RawHeaders } from './types.js'

const SENDFILE_HEADERS = new Set(['x-sendfile', 'x-lighttpd-send-file'])

/** The X-Sendfile path of a response head, or null. */
export function sendfilePath (headers: RawHeaders): string | null {
  for (let i = 0; i < headers.length; i += 2) {
    const n = headers[i]
    if ((n.length === 10 || n.length === 20) && SENDFILE_HEADERS.has(n.toLowerCase())) return headers[i + 1].trim()
  }
  return null
}

export interface OpenedFile {
  stream: ReadStream
  size: number
  /** Response headers: the backend's, minus X-Sendfile and its own length/encoding. */
  headers: RawHeaders
}

/** Open the file a backend asked for, or fail with ERR_SENDFILE_FORBIDDEN / ERR_SCRIPT_NOT_FOUND. */
export async function openSendfile (path: string, roots: readonly string[], backendHeaders: RawHeaders): Promise<OpenedFile> {
  if (!path.startsWith('/') || path.includes('\0')) throw new ProxyError('ERR_SENDFILE_FORBIDDEN', `not an absolute path: ${JSON.stringify(path)}`, { phase: 'head' })
  let real: string
  try {
    real = await realpath(path)
  } catch {
    throw new ProxyError('ERR_SCRIPT_NOT_FOUND', `X-Sendfile ${path}`, { phase: 'head' })
  }
  if (!roots.some((root) => isInside(root, real))) throw new ProxyError('ERR_SENDFILE_FORBIDDEN', path, { phase: 'head' })
  const fh = await open(real, 'r')
  const st = await fh.stat()
  if (!st.isFile()) {
    await fh.close()
    throw new ProxyError('ERR_SENDFILE_FORBIDDEN', `not a regular file: ${path}`, { phase: 'head' })
  }
  const headers: string[] = []
  for (let i = 0; i < backendHeaders.length; i += 2) {
    const n = backendHeaders[i].toLowerCase()
    if (SENDFILE_HEADERS.has(n) || n === 'content-length' || n === 'content-encoding' || n === 'transfer-encoding') continue
    headers.push(backendHeaders[i], backendHeaders[i + 1])
  }
  headers.push('Content-Length', String(st.size))
  // The fd is handed to the stream, which closes it (also on destroy).
  return { stream: createReadStream('', { fd: fh, autoClose: true }), size: st.size, headers }
}
