/**
 * A CGI script whose response is complete by its Content-Length but which goes on running (stdout
 * still open) is stopped `options.linger` ms later, with its process group, as httpd and lighttpd
 * stop a CGI whose request has ended. A script that exits on its own is left alone.
 */
import t from 'tap'
import { existsSync, mkdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { get } from '../helpers/servers.js'
import { cgiProxy, tempDir, writeScripts } from './harness.js'

const SCRIPTS = {
  // Answers in full, then keeps working with stdout open: the leader's and a child's pid in files.
  'stay.sh': "#!/bin/sh\nprintf 'Content-Type: text/plain\\nContent-Length: 2\\n\\nok'\necho $$ > \"$PIDS/leader\"\nsleep 300 &\necho $! > \"$PIDS/child\"\nwait\n",
  // Answers in full and finishes a little later by itself.
  'tidy.sh': "#!/bin/sh\nprintf 'Content-Type: text/plain\\nContent-Length: 2\\n\\nok'\necho $$ > \"$PIDS/tidy\"\nsleep 0.1\ntouch \"$PIDS/tidy-done\"\n",
}

const alive = (pid: number): boolean => {
  try { return !/^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, 'utf8')) } catch { return false }
}

t.test('a script still running after its complete response is stopped after linger, its group too', async (t) => {
  guardLeaks(t)
  const dir = tempDir(t)
  const pids = join(dir, 'pids')
  writeScripts(join(dir, 'cgi'), SCRIPTS)
  mkdirSync(pids)
  const p = await cgiProxy(t, { cgi: { environment: { PIDS: pids } } }, [
    { match: { prefix: '/cgi-bin/' }, protocol: 'cgi', spawn: 'cgi', docroot: join(dir, 'cgi'), stripPrefix: true, options: { linger: 1000 } },
  ])
  const r = await get(`${p.url}/cgi-bin/stay.sh`)
  t.same([r.status, r.body.toString()], [200, 'ok'], 'the response is complete at once')
  t.ok(await waitFor(() => existsSync(join(pids, 'child')), 5000), 'the script went on running')
  const leader = Number(readFileSync(join(pids, 'leader'), 'utf8'))
  const child = Number(readFileSync(join(pids, 'child'), 'utf8'))
  t.ok(await waitFor(() => !alive(leader) && !alive(child), 10_000), 'stopped after linger: the script and its background child')
  t.ok(p.lines.some((l) => l.level === 'warn' && l.msg.includes('still running after its complete response')), 'logged once, as a warning')

  const tidy = await get(`${p.url}/cgi-bin/tidy.sh`)
  t.equal(tidy.body.toString(), 'ok')
  t.ok(await waitFor(() => existsSync(join(pids, 'tidy-done')), 5000), 'a script that ends within linger finishes its work')
})

t.test('linger is checked like every CGI option', async (t) => {
  const { parseCgiOptions } = await import('../../src/protocols/cgi/options.js')
  t.equal(parseCgiOptions(undefined, '/o').linger, 5000, 'default 5 s')
  t.equal(parseCgiOptions({ linger: 0 }, '/o').linger, 0)
  t.throws(() => parseCgiOptions({ linger: -1 }, '/o'), /whole number of milliseconds/)
})
