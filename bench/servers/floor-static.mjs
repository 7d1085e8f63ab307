// The Node floor for static files: node:http + node:fs with what a correct static server cannot do
// without: the URL path (query dropped, decoded once, normalised so it never climbs above the
// docroot), open, fstat (regular files only, else 404), a head with Content-Type (a few
// extensions, else application/octet-stream), Content-Length and Last-Modified, then exactly
// that many bytes streamed from the descriptor (fs.ReadStream, 64 KiB reads), the file closed
// when the client goes away. GET and HEAD only (405 otherwise). Callback fs, no promises.
//
// Left out, compared with proxycore's static adapter (src/protocols/static/adapter.ts): ETag and
// the conditional requests (If-None-Match / If-Modified-Since 304, If-Match /
// If-Unmodified-Since 412), byte ranges (206/416, If-Range), the dot-file refusal, the symlink
// policy (realpath of the docroot and of the file, owner checks, O_NOFOLLOW), the re-check of the
// opened descriptor (readlink /proc/self/fd/N still inside the docroot, a stat of the name with
// the same dev/ino), the core's routing and script walk, Cache-Control, timeouts, a file that
// grows or shrinks while sent. Not a server to deploy: only the least a Node process can do per
// static request. node floor-static.mjs <docroot>
import { createServer } from 'node:http'
import { close, createReadStream, fstat, open } from 'node:fs'
import { extname, join, normalize } from 'node:path'

const root = process.argv[2]
const TYPES = { '.txt': 'text/plain; charset=utf-8', '.html': 'text/html; charset=utf-8', '.css': 'text/css; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.json': 'application/json', '.png': 'image/png', '.svg': 'image/svg+xml' }

function fail (res, status) {
  res.writeHead(status, { 'Content-Type': 'text/plain', 'Content-Length': 4 })
  res.end(`${status}\n`)
}

const server = createServer((req, res) => {
  req.resume()
  if (req.method !== 'GET' && req.method !== 'HEAD') { res.setHeader('Allow', 'GET, HEAD'); fail(res, 405); return }
  const q = req.url.indexOf('?')
  let path
  try { path = decodeURIComponent(q < 0 ? req.url : req.url.slice(0, q)) } catch { fail(res, 400); return }
  if (path.includes('\0')) { fail(res, 400); return }
  // normalize('/' + …) resolves every `..` against the leading slash: never above the docroot.
  const file = join(root, normalize(`/${path}`))
  open(file, 'r', (err, fd) => {
    if (err) { fail(res, err.code === 'EACCES' ? 403 : 404); return }
    fstat(fd, (err, st) => {
      if (err || !st.isFile()) { close(fd, () => {}); fail(res, 404); return }
      res.writeHead(200, {
        'Content-Type': TYPES[extname(file)] ?? 'application/octet-stream',
        'Content-Length': st.size,
        'Last-Modified': st.mtime.toUTCString(),
      })
      if (req.method === 'HEAD' || st.size === 0) { close(fd, () => {}); res.end(); return }
      // Exactly st.size bytes (`end` is inclusive); the stream closes the descriptor.
      const body = createReadStream(null, { fd, start: 0, end: st.size - 1 })
      body.on('error', () => res.destroy())
      res.on('close', () => body.destroy())
      body.pipe(res)
    })
  })
})
server.keepAliveTimeout = 60_000
server.listen(0, '127.0.0.1', () => console.log(`LISTENING ${server.address().port}`))
process.on('SIGTERM', () => process.exit(0))
