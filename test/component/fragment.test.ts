/**
 * A request-target never carries a fragment (RFC 9112 §3.2; RFC 9110 §7.1: the client removes it),
 * yet node's parser lets `#` through. Before, `GET /c/x.sh?a=1#frag` ran the script with
 * QUERY_STRING=`a=1#frag`, `/c/x.sh#frag` was a 404 and the absolute form a 400. Now every form
 * is 400 ERR_BAD_REQUEST and no backend hears of it (parseTarget in src/core/runtime.ts).
 * Literal request bytes over a raw socket; a real shell CGI script and a node:http backend.
 */
import t from 'tap'
import { join } from 'node:path'
import { guardLeaks } from '../helpers/leaks.js'
import { backend, rawRequest } from '../helpers/servers.js'
import { cgiProxy, parseEnv, tempDir, writeScripts } from '../cgi/harness.js'
import { parseTarget } from '../../src/core/runtime.js'

const ENV_SH = '#!/bin/sh\nprintf "Content-Type: text/plain\\n\\n"\nenv\n'

function split (out: string): { status: number, head: string, body: string } {
  const at = out.indexOf('\r\n\r\n')
  return { status: Number(out.slice(9, 12)), head: out.slice(0, at), body: out.slice(at + 4) }
}

t.test('parseTarget refuses any target with #', async (t) => {
  t.equal(parseTarget('GET', '/a#b', 'h'), null)
  t.equal(parseTarget('GET', '/a?x=1#b', 'h'), null)
  t.equal(parseTarget('GET', '/#', 'h'), null)
  t.equal(parseTarget('GET', 'http://h/a#b', 'h'), null)
  t.equal(parseTarget('GET', 'http://h#b', 'h'), null)
  t.same(parseTarget('GET', '/a?x=%23', 'h'), { method: 'GET', url: '/a?x=%23', path: '/a', query: 'x=%23', host: 'h' }, 'an encoded # is data')
})

t.test('# in any request-target → 400, no backend contacted', async (t) => {
  guardLeaks(t)
  const seen: string[] = []
  const be = await backend(t, (req, res) => { seen.push(req.url ?? ''); res.end('upstream') })
  const dir = tempDir(t)
  const www = join(dir, 'www')
  writeScripts(www, { 'x.sh': ENV_SH })
  const p = await cgiProxy(t, { cgi: {} }, [
    { match: { prefix: '/c/' }, protocol: 'cgi', spawn: 'cgi', docroot: www, stripPrefix: true },
    { match: { prefix: '/h/' }, protocol: 'http', backends: [be.address] },
  ])
  const send = async (target: string, fields = 'Connection: close\r\n'): Promise<ReturnType<typeof split>> =>
    split(await rawRequest(p.port, `GET ${target} HTTP/1.1\r\nHost: a\r\n${fields}\r\n`))

  for (const target of ['/c/x.sh?a=1#frag', '/c/x.sh#frag', '/c/x.sh#', `http://a:${p.port}/c/x.sh?a=1#frag`, `http://a:${p.port}/c/x.sh#frag`, '/h/x#frag', '/h/x?q#frag', '/nowhere#frag']) {
    const r = await send(target)
    t.equal(r.status, 400, `${target}: 400`)
    t.match(r.body, /ERR_BAD_REQUEST/)
    t.match(r.head, /\r\nconnection: close/i)
  }
  const up = await send('/h/x#frag', 'Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n')
  t.equal(up.status, 400, 'an upgrade with a fragment is refused the same way')
  t.same(seen, [], 'the http backend never saw a request')
  const upOk = await send('/h/x', 'Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n')
  t.not(upOk.status, 400, 'control: the same upgrade without the fragment is not a 400')
  t.same(seen, ['/h/x'], 'and reaches the backend')
  t.equal(p.lines.filter((l) => l.obj.stream === 'stderr').length, 0)

  const ok = await send('/c/x.sh?a=1%23frag')
  t.equal(ok.status, 200, 'an encoded # still works')
  t.equal(parseEnv(ok.body).QUERY_STRING, 'a=1%23frag')
})
