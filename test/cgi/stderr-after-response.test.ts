/**
 * stderr a script writes after its response is over is logged by line too: a line it writes in
 * two parts (two writes, two reads of the pipe) is one log entry, not two. The exchange is done by
 * then, so the CGI adapter holds the start of the line until its newline (or stderr's end).
 */
import t from 'tap'
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { guardLeaks, processGroup, waitFor } from '../helpers/leaks.js'
import { postHead, Raw } from '../helpers/raw-client.js'
import { scriptsProxy } from './harness.js'

const SCRIPTS: Record<string, string> = {
  // Answers, writes the start of a stderr line, waits for the one body byte sent after the answer
  // (so the proxy reads the start on its own), ends the line; then a last line without a newline.
  'split.sh': `#!/bin/sh
echo $$ > "$0.tmp" && mv "$0.tmp" "$0.pid"
printf 'Content-Type: text/plain\\nContent-Length: 2\\n\\nok'
printf 'part1 ' >&2
head -c 1 >/dev/null
printf 'part2\\nlast words' >&2
`,
  // A line begun before the response and ended after it.
  'straddle.sh': `#!/bin/sh
echo $$ > "$0.tmp" && mv "$0.tmp" "$0.pid"
printf 'begun before, ' >&2
printf 'Content-Type: text/plain\\nContent-Length: 2\\n\\nok'
head -c 1 >/dev/null
printf 'ended after\\n' >&2
`
}

t.test('a stderr line written in two parts after the response is one log entry', async (t) => {
  guardLeaks(t)
  const p = await scriptsProxy(t, SCRIPTS, { requestBuffering: false, timeouts: { headers: '30s', idle: '30s' }, options: { linger: 30_000 } })
  const dir = p.dir
  const stderr = (): string[] => p.lines.filter((l) => l.obj.stream === 'stderr').map((l) => l.msg)
  const raw = new Raw(p.port, postHead('/c/split.sh', 1))
  t.teardown(() => { raw.socket.destroy() })
  t.ok(await raw.answered(), 'answered before its body byte')
  t.equal(raw.body(), 'ok')
  const pidFile = join(dir, 'split.sh.pid')
  t.ok(await waitFor(() => existsSync(pidFile), 10_000), 'pid written')
  const pid = Number(readFileSync(pidFile, 'utf8'))
  // The proxy reads the first part as soon as it is written; a wrong split shows in the log then.
  await waitFor(() => stderr().length > 0, 1000)
  await raw.send(Buffer.from('x'))
  t.ok(await waitFor(() => processGroup(pid).every((q) => q.state === 'Z'), 20_000), 'the script exited')
  t.ok(await waitFor(() => stderr().includes('last words'), 10_000), 'the last line, without a newline, is logged at stderr\'s end')
  t.same(stderr(), ['part1 part2', 'last words'], 'one entry per line')

  const raw2 = new Raw(p.port, postHead('/c/straddle.sh', 1))
  t.teardown(() => { raw2.socket.destroy() })
  t.ok(await raw2.answered(), 'straddle: answered')
  const pid2File = join(dir, 'straddle.sh.pid')
  t.ok(await waitFor(() => existsSync(pid2File), 10_000), 'straddle: pid written')
  const pid2 = Number(readFileSync(pid2File, 'utf8'))
  await waitFor(() => stderr().length > 2, 1000)
  await raw2.send(Buffer.from('x'))
  t.ok(await waitFor(() => processGroup(pid2).every((q) => q.state === 'Z'), 20_000), 'straddle: the script exited')
  t.ok(await waitFor(() => stderr().some((l) => l.includes('ended after')), 10_000), 'straddle: logged')
  t.same(stderr().slice(2), ['begun before, ended after'], 'a line across the response\'s end is one entry')
})
