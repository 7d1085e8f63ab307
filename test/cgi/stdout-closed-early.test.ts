/**
 * The process side of a CGI exchange: a script that goes on running once its response
 * is over (it closed stdout, or it answered with a local redirect) must neither hold its response
 * until `timeouts.idle` cuts it nor outlive the request: Apache's mod_cgi and lighttpd end the
 * response at stdout EOF and stop the script at the end of the request.
 */
import t from 'tap'
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { alive, processGroup, waitFor } from '../helpers/leaks.js'
import { assertNoLeaks, leakBaseline } from '../cgi-shared/leak-check.js'
import { cgiProxy, fetchRaw, tempDir, writeScripts } from './harness.js'

const baseline = leakBaseline()

const gone = (pgid: number): boolean => !alive(pgid) || processGroup(pgid).every((p) => p.state === 'Z')

const SCRIPTS: Record<string, string> = {
  // The common "answer, then do the slow work" CGI idiom.
  'closeout.sh': "#!/bin/sh\necho $$ > closeout.pid\nprintf 'Content-Type: text/plain\\n\\nanswered early'\nexec >&-\nsleep 300\n",
  'closeout.pl': '#!/usr/bin/perl -w\nuse strict;\nopen(my $f, ">", "closeout-pl.pid") or die; print $f "$$\\n"; close $f;\n$| = 1;\nprint "Content-Type: text/plain\\r\\n\\r\\nperl answered";\nclose STDOUT;\nsleep 300;\n',
  // Killed by a signal right after its body: its EOF must still read as a truncation.
  'killself.sh': "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\n'\nhead -c 10240 /dev/zero\nkill -9 $$\n",
  'redir-sleep.sh': "#!/bin/sh\necho $$ > redir.pid\nprintf 'Location: /c/ok.sh\\n\\n'\nsleep 300\n",
  'ok.sh': "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\nok'\n"
}

type Launcher = 'direct' | 'fork-server'
const LAUNCHERS: Launcher[] = ['direct', 'fork-server']

async function setup (t: Parameters<typeof tempDir>[0], launcher: Launcher): Promise<{ url: string, dir: string, lines: Awaited<ReturnType<typeof cgiProxy>>['lines'] }> {
  const dir = tempDir(t)
  writeScripts(dir, SCRIPTS)
  const p = await cgiProxy(t, { cgi: { launcher } }, [{
    match: { prefix: '/c/' },
    protocol: 'cgi',
    spawn: 'cgi',
    docroot: dir,
    stripPrefix: true,
    localRedirects: true,
    // A long idle timeout: the response must not need it to end.
    timeouts: { headers: '20s', idle: '20s' },
    options: { linger: 200 }
  }])
  return { url: p.url, dir, lines: p.lines }
}

async function pidOf (dir: string, file: string): Promise<number> {
  await waitFor(() => existsSync(join(dir, file)) && readFileSync(join(dir, file), 'utf8').endsWith('\n'), 5000)
  return Number(readFileSync(join(dir, file), 'utf8'))
}

for (const launcher of LAUNCHERS) {
t.test(`${launcher}: a script that closes stdout and keeps running: the response ends at EOF, the script is stopped after linger`, async (t) => {
  const p = await setup(t, launcher)
  for (const [name, pidFile, body] of [['closeout.sh', 'closeout.pid', 'answered early'], ['closeout.pl', 'closeout-pl.pid', 'perl answered']]) {
    const started = Date.now()
    const r = await fetchRaw(`${p.url}/c/${name}`)
    t.equal(r.status, 200, name)
    t.equal(r.body.toString(), body, `${name}: whole body`)
    t.ok(r.complete, `${name}: ended cleanly, not cut by timeouts.idle`)
    t.ok(Date.now() - started < 15_000, `${name}: well before the 20 s idle timeout`)
    const pid = await pidOf(p.dir, pidFile)
    t.ok(await waitFor(() => gone(pid), 10_000), `${name}: its group is stopped after linger, not left running`)
  }
  t.ok(p.lines.some((l) => l.msg.includes('still running after its complete response')), 'the stop is logged')
})

t.test(`${launcher}: a script killed by a signal after its body is still a cut response`, async (t) => {
  const p = await setup(t, launcher)
  const r = await fetchRaw(`${p.url}/c/killself.sh`)
  t.equal(r.status, 200)
  t.notOk(r.complete, 'truncated, never a clean end')
})

t.test(`${launcher}: a local redirect stops the redirecting script after linger`, async (t) => {
  const p = await setup(t, launcher)
  const r = await fetchRaw(`${p.url}/c/redir-sleep.sh`)
  t.same([r.status, r.body.toString(), r.complete], [200, 'ok', true], 'the redirect target answers')
  const pid = await pidOf(p.dir, 'redir.pid')
  t.ok(await waitFor(() => gone(pid), 10_000), 'the redirecting script does not outlive its request')
  t.ok(p.lines.some((l) => l.msg.includes('still running after its complete response')), 'the stop is logged')
})
}

t.test('no leaks', (t) => assertNoLeaks(t, baseline, 10_000))
