/**
 * A CGI exchange whose script exited before its stderr reached EOF arms a grace timer (it bounds a
 * stderr held by a daemon outside the script's group). When stderr then ends by itself, as it
 * does for nearly every script, that timer must go with it: left to fire, it kept each finished
 * exchange (buffers, parser, closures) alive for another second, a second's worth of requests
 * retained under CGI load. The oracle is async_hooks: every timer src/protocols/cgi/exchange.ts
 * makes, and whether it was destroyed (cleared or fired), checked as soon as the last script's
 * stderr is over (its unterminated last line is logged at stderr's end).
 */
import t from 'tap'
import { createHook } from 'node:async_hooks'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { get } from '../helpers/servers.js'
import { scriptsProxy } from './harness.js'

const SCRIPTS: Record<string, string> = {
  'talk.sh': `#!/bin/sh
printf 'Content-Type: text/plain\\nContent-Length: 2\\n\\nok'
printf 'last words' >&2
`
}

t.test('a script\'s stderr ending by itself after its exit leaves no grace timer behind', async (t) => {
  guardLeaks(t)
  const p = await scriptsProxy(t, SCRIPTS, {})
  // Timers made by the CGI exchange: async id → still alive (neither cleared nor fired).
  const alive = new Set<number>()
  const hook = createHook({
    init (id, type) {
      if (type !== 'Timeout') return
      if (/\/src\/protocols\/cgi\/exchange\.ts/.test(new Error().stack ?? '')) alive.add(id)
    },
    destroy (id) { alive.delete(id) },
  })
  hook.enable()
  t.teardown(() => hook.disable())
  const N = 60
  const statuses: number[] = []
  // Two at a time, so exits and stderr EOFs interleave as under load.
  for (let i = 0; i < N; i += 2) statuses.push(...(await Promise.all([get(`${p.url}/c/talk.sh`), get(`${p.url}/c/talk.sh`)])).map((r) => r.status))
  t.same(statuses, Array(N).fill(200), `${N} answers`)
  const ended = (): number => p.lines.filter((l) => l.obj.stream === 'stderr' && l.msg === 'last words').length
  t.ok(await waitFor(() => ended() === N, 20_000), 'every script\'s stderr ended (its last line logged at the end)')
  // A cleared timer's destroy() hook runs a turn or so later; a timer left armed lives on for the
  // grace second (EXIT_GRACE_MS), five times this wait.
  await waitFor(() => alive.size === 0, 200, 5)
  t.equal(alive.size, 0, `no timer of a finished CGI exchange is alive (${alive.size} left)`)
})
