/**
 * A script that writes its whole answer first and only then reads its request body (a Content-
 * Length response, a closed stdout, a local redirect) gets the rest of the body after its response
 * is over, then EOF: it reads all of it and exits at once, instead of waiting on a stdin that never
 * ends until `linger` stops it. Spooled (requestBuffering) and streamed bodies alike. A client that
 * hangs up mid-body still never gives the script an EOF on the part it sent (short-stdin.test.ts).
 */
import t from 'tap'
import { createHash } from 'node:crypto'
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { guardLeaks, processGroup, waitFor } from '../helpers/leaks.js'
import { postHead, Raw } from '../helpers/raw-client.js'
import { fetchRaw, scriptsProxy } from './harness.js'

// sha256 of everything read up to EOF, written whole (a rename) so a half-written file is never read.
const SHA = 'sha256sum | cut -d" " -f1 > "$0.tmp" && mv "$0.tmp" "$0.sha"\n'
const PID = 'echo $$ > "$0.tmp.pid" && mv "$0.tmp.pid" "$0.pid"\n'
const SCRIPTS: Record<string, string> = {
  'cl.sh': `#!/bin/sh\n${PID}printf 'Content-Type: text/plain\\r\\nContent-Length: 2\\r\\n\\r\\nok'\n${SHA}`,
  'closed.sh': `#!/bin/sh\n${PID}printf 'Content-Type: text/plain\\r\\n\\r\\nok'\nexec 1>&-\n${SHA}`,
  'redirect.sh': `#!/bin/sh\n${PID}printf 'Location: /c/ok.sh\\n\\n'\n${SHA}`,
  'ok.sh': "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\nok'\n",
  'cl.pl': `#!/usr/bin/perl
use strict; use warnings; use Digest::SHA;
open(my $p, '>', "$0.tmp.pid") or die; print $p "$$\\n"; close $p; rename("$0.tmp.pid", "$0.pid") or die;
$| = 1;
print "Content-Type: text/plain\\r\\nContent-Length: 2\\r\\n\\r\\nok";
binmode STDIN;
my $d = Digest::SHA->new(256);
$d->addfile(*STDIN);
open(my $o, '>', "$0.tmp") or die; print $o $d->hexdigest, "\\n"; close $o; rename("$0.tmp", "$0.sha") or die;
`,
  // Counts what it read up to EOF (the abort case: it must never get one).
  'count.sh': `#!/bin/sh\n${PID}printf 'Content-Type: text/plain\\r\\nContent-Length: 2\\r\\n\\r\\nok'\nn=$(wc -c)\necho "$n" > "$0.read"\n`
}
const SIZE = 4 << 20
// Far longer than the body takes: a script still waiting for its stdin would be stopped only then.
const LINGER = 60_000

function body (): Buffer {
  const b = Buffer.allocUnsafe(SIZE)
  for (let i = 0; i < SIZE; i++) b[i] = (i * 7 + (i >> 13)) & 0xff
  return b
}

async function pidOf (t: { ok: (v: unknown, msg: string) => void }, file: string): Promise<number> {
  t.ok(await waitFor(() => existsSync(file), 20_000), `${file}: written`)
  return Number(readFileSync(file, 'utf8'))
}

for (const requestBuffering of [true, false]) {
  t.test(`requestBuffering ${String(requestBuffering)}: the body goes on to a script that read it only after answering`, async (t) => {
    guardLeaks(t)
    const p = await scriptsProxy(t, SCRIPTS, { localRedirects: true, requestBuffering, timeouts: { headers: '30s', idle: '30s' }, options: { linger: LINGER } })
    const dir = p.dir
    const data = body()
    const want = createHash('sha256').update(data).digest('hex')
    for (const name of ['cl.sh', 'closed.sh', 'redirect.sh', 'cl.pl']) {
      const started = Date.now()
      const r = await fetchRaw(`${p.url}/c/${name}`, { method: 'POST', body: data })
      t.same([r.status, r.body.toString(), r.complete], [200, 'ok', true], `${name}: answered`)
      const pid = await pidOf(t, join(dir, `${name}.pid`))
      // The script exits by itself once it has read its whole stdin and seen EOF, not at `linger`.
      t.ok(await waitFor(() => processGroup(pid).every((q) => q.state === 'Z'), 20_000), `${name}: exited on its own`)
      t.ok(Date.now() - started < LINGER / 2, `${name}: well before linger (${Date.now() - started} ms)`)
      const shaFile = join(dir, `${name}.sha`)
      t.ok(existsSync(shaFile), `${name}: read its stdin to EOF`)
      t.equal(existsSync(shaFile) ? readFileSync(shaFile, 'utf8').trim() : null, want, `${name}: the whole body, byte for byte`)
    }
    t.notOk(p.lines.some((l) => l.msg.includes('still running after its complete response')), 'no script was stopped after linger')
  })
}

// A spooled body is whole before the script starts: only a streamed one can be cut after the answer.
t.test('a client that hangs up mid-body after the answer never gives the script an EOF (streamed body)', async (t) => {
  guardLeaks(t)
  const p = await scriptsProxy(t, SCRIPTS, { requestBuffering: false, timeouts: { headers: '30s', idle: '30s' }, options: { linger: 1000 } })
  const dir = p.dir
  const raw = new Raw(p.port, postHead('/c/count.sh', SIZE))
  t.teardown(() => { raw.socket.destroy() })
  await raw.send(body().subarray(0, SIZE / 2))
  t.ok(await raw.answered(), 'answered before the body is all there')
  t.equal(raw.body(), 'ok')
  const pid = await pidOf(t, join(dir, 'count.sh.pid'))
  raw.socket.destroy()
  t.ok(await waitFor(() => processGroup(pid).every((q) => q.state === 'Z'), 20_000), 'the script is gone (stopped after linger)')
  const readFile = join(dir, 'count.sh.read')
  const got = existsSync(readFile) ? readFileSync(readFile, 'utf8').trim() : null
  t.equal(got, null, `no EOF after half a body (it read ${String(got)} of ${SIZE} bytes)`)
})

t.test('the rest of a streamed body sent only after the answer still reaches the script whole', async (t) => {
  guardLeaks(t)
  const p = await scriptsProxy(t, SCRIPTS, { requestBuffering: false, timeouts: { headers: '30s', idle: '30s' }, options: { linger: LINGER } })
  const dir = p.dir
  const data = body()
  const raw = new Raw(p.port, postHead('/c/cl.sh', SIZE))
  t.teardown(() => { raw.socket.destroy() })
  await raw.send(data.subarray(0, 1 << 20))
  t.ok(await raw.answered(), 'answered with 1 MiB of the body sent')
  t.equal(raw.body(), 'ok')
  const pid = await pidOf(t, join(dir, 'cl.sh.pid'))
  t.ok(processGroup(pid).some((q) => q.state !== 'Z'), 'the script still waits for the rest of its body')
  await raw.send(data.subarray(1 << 20))
  t.ok(await waitFor(() => processGroup(pid).every((q) => q.state === 'Z'), 20_000), 'exited on its own once the body was all there')
  const shaFile = join(dir, 'cl.sh.sha')
  t.equal(existsSync(shaFile) ? readFileSync(shaFile, 'utf8').trim() : null, createHash('sha256').update(data).digest('hex'), 'the whole body, byte for byte')
  t.notOk(p.lines.some((l) => l.msg.includes('still running after its complete response')), 'not stopped after linger')
})
