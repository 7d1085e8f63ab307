/**
 * SCGI under large transfers, against real uWSGI (transfer-harness.ts): a 128 MiB response, with
 * and without Content-Length, to a client that pauses (the uWSGI worker itself is held: its
 * written-bytes counter stops), 128 MiB uploads with a Content-Length and chunked (spooled; the
 * spool fd closed after), and the guide's uWSGI command with a client that pauses longer than
 * uWSGI's default --socket-timeout. Sizes are above the asserted RSS bound, so buffering a
 * transfer whole would fail the test. Faults: uwsgi-faults.test.ts; malformed heads: malformed-head.test.ts.
 */
import t from 'tap'
import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { waitFor } from '../helpers/leaks.js'
import { uwsgiSkip } from './uwsgi-peer.js'
import { APP, MiB, mib, patternSha, pausingDownload, rssGrowth, setup, spoolFds, upload, wchar } from './transfer-harness.js'

const BIG = 128 * MiB
// Far below any transfer here; with the proxy's scavenger on (transfer-harness.ts setup) the
// first download grew 16-37 MiB on Node 24 (69-104 MiB without it: garbage, one run over 100).
const RSS_BOUND = 100 * MiB
const skip = uwsgiSkip()

for (const cl of [true, false]) {
t.test(`a 128 MiB response ${cl ? 'with a Content-Length' : 'to EOF (chunked to the client)'} to a client that pauses: uWSGI is held at its socket, the sha matches, RSS bounded`, { skip }, async (t) => {
  const s = await setup(t)
  let pid = 0
  let writtenAtPause = 0
  let maxWhilePaused = 0
  const { result, growth } = await rssGrowth(() => pausingDownload(s.port, `/app/?gen=${BIG}${cl ? '' : '&nocl=1'}`, 3000, (res) => {
    // Held for 3 s: unbuffered, uWSGI could write the whole 128 MiB in well under a second.
    pid = Number(res.headers['x-pid'])
    writtenAtPause = wchar(pid)
  }, () => { maxWhilePaused = Math.max(maxWhilePaused, wchar(pid)) }))
  const ahead = maxWhilePaused - writtenAtPause
  t.comment(`rss growth ${mib(growth)} for ${mib(BIG)}; uWSGI wrote ${mib(maxWhilePaused)} while the client had read 1 MiB and paused (${mib(ahead)} more during the 3 s pause)`)
  t.equal(result.status, 200)
  t.equal(result.length, cl ? String(BIG) : undefined)
  t.equal(result.chunked, !cl, cl ? 'the Content-Length went out' : 'chunked: the end is the last chunk')
  t.ok(result.complete, 'ended cleanly')
  t.equal(result.bytes, BIG)
  t.equal(result.sha, patternSha(BIG), 'sha256 of what arrived')
  t.ok(maxWhilePaused < 48 * MiB, `uWSGI held at ${mib(maxWhilePaused)} of ${mib(BIG)} while the client paused: backpressure reaches its socket`)
  t.ok(growth < RSS_BOUND, `RSS grew ${mib(growth)} < ${mib(RSS_BOUND)}`)
  t.same(s.events.map((e) => [e.status, e.error]), [[200, null]])
})
}

for (const chunked of [false, true]) {
  t.test(`a 128 MiB ${chunked ? 'chunked (spooled)' : 'Content-Length'} upload to an app that reads late: byte-exact, RSS bounded${chunked ? ', the spool fd closed' : ''}`, { skip }, async (t) => {
    const s = await setup(t)
    const sha = createHash('sha256')
    let sawSpool = false
    const watch = setInterval(() => { if (spoolFds().length > 0) sawSpool = true }, 20)
    const { result, growth } = await rssGrowth(() => upload(s.port, '/app/?sink=1&delay=1', BIG, chunked, sha))
    clearInterval(watch)
    t.comment(`rss growth ${mib(growth)} for a ${mib(BIG)} upload`)
    t.equal(result.status, 200)
    t.equal(result.json?.body_len, BIG, 'the app read CONTENT_LENGTH bytes')
    t.equal(result.json?.body_sha256, sha.digest('hex'), 'sha256 of what arrived at the app')
    t.ok(growth < RSS_BOUND, `RSS grew ${mib(growth)} < ${mib(RSS_BOUND)}`)
    if (chunked) {
      t.ok(sawSpool, 'the chunked body went through a spool file')
      t.ok(await waitFor(() => spoolFds().length === 0, 5000), 'and its fd is closed after the response')
    }
    t.same(s.events.map((e) => [e.status, e.error]), [[200, null]])
  })
}

/**
 * The uWSGI command of docs/guides/python-scgi.md §2, as written there (its socket and app paths
 * swapped for this test's). uWSGI gives up a write or a read its peer has not taken for
 * `--socket-timeout` (4 s by default) and closes the connection: the proxy, which holds uWSGI
 * back while a client pauses (backpressure), then saw a short upload (502) or, for a response
 * without Content-Length, an early end it cannot tell from the real one.
 */
function guideCommand (socketPath: string): string[] {
  const guide = readFileSync(fileURLToPath(new URL('../../docs/guides/python-scgi.md', import.meta.url)), 'utf8')
  const section = guide.slice(guide.indexOf('## 2. An external uWSGI'))
  const command = /```sh\n(uwsgi [^`]*?)\n```/.exec(section)?.[1]
  if (command === undefined) throw new Error('no uwsgi command in section 2 of the guide')
  const words = command.replace(/\\\n/g, ' ').split(/\s+/).filter((w) => w !== '')
  if (!words.includes('/run/app/scgi.sock') || !words.includes('/srv/app/app.py')) throw new Error(`the guide's command changed: ${command}`)
  return words.slice(1).map((w) => w === '/run/app/scgi.sock' ? socketPath : w === '/srv/app/app.py' ? APP : w)
}

t.test('the guide\'s uWSGI command: a client that pauses 6 s in its download (no Content-Length) and in its upload gets the whole transfer', { skip }, async (t) => {
  const s = await setup(t, {}, guideCommand)
  t.comment(`uwsgi ${guideCommand('SOCKET').join(' ')}`)
  const PAUSE = 6000
  const down = await pausingDownload(s.port, `/app/?gen=${32 * MiB}&nocl=1`, PAUSE)
  t.equal(down.bytes, 32 * MiB, `the whole response arrived (${down.bytes} bytes)`)
  t.equal(down.sha, patternSha(32 * MiB), 'sha256 of what arrived')

  const up = await upload(s.port, '/app/?sink=1', 16 * MiB, false, createHash('sha256'), { after: 4 * MiB, ms: PAUSE })
  t.equal(up.status, 200, 'the upload was answered')
  t.equal(up.json?.body_sha256, patternSha(16 * MiB), 'sha256 of what the app read')
  t.same(s.events.map((e) => [e.status, e.error]), [[200, null], [200, null]])
})
