# --big SCGI backend (uWSGI, python3 plugin). POST: sha256 of wsgi.input read in 64 KiB chunks,
# answered as "<sha256> <bytes>". GET ?N: N bytes of the lib/gen.mjs stream (64 KiB blocks of
# xorshift32 noise, each stamped with its block index as a uint64 LE), yielded block by block.
import hashlib
import struct

B = 65536


def _base():
    x = 0x9e3779b9
    out = bytearray(B)
    for i in range(0, B, 4):
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        struct.pack_into('<I', out, i, x)
    return bytes(out)


BASE = _base()


def application(environ, start_response):
    if environ['REQUEST_METHOD'] == 'POST':
        h = hashlib.sha256()
        n = 0
        inp = environ['wsgi.input']
        while True:
            c = inp.read(B)
            if not c:
                break
            h.update(c)
            n += len(c)
        body = ('%s %d\n' % (h.hexdigest(), n)).encode()
        start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', str(len(body)))])
        return [body]
    q = environ.get('QUERY_STRING') or '0'
    total = int(q) if q.isdigit() else 0
    start_response('200 OK', [('Content-Type', 'application/octet-stream'), ('Content-Length', str(total))])

    def blocks():
        i = 0
        left = total
        while left > 0:
            n = min(B, left)
            yield struct.pack('<Q', i) + BASE[8:n] if n >= 8 else BASE[:n]
            i += 1
            left -= n
    return blocks()
