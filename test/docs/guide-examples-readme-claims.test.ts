/**
 * examples/node-http, examples/express and examples/fastify READMEs, run as written from the
 * repository root (ports 3000 and 8080 swapped for free ones): the upstream one-liner, the
 * example started through the TypeScript loader, what it prints, the two curl answers, and Ctrl-C
 * ending it. In a file of its own: each start compiles src/ through the loader (3-11 s here).
 */
import t from 'tap'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { root } from '../cli/run.js'
import { answering, freePort, run, text, userEnv } from './snippets.js'

for (const [example, home] of [['node-http', 'served by node:http itself\n'], ['express', 'express home'], ['fastify', '{"from":"fastify"}']]) {
  t.test(`examples/${example}/README.md: its commands, run from the repository root`, async (t) => {
    guardLeaks(t, { timeoutMs: 15_000 })
    const readme = readFileSync(join(root, 'examples', example, 'README.md'), 'utf8')
    const [up, port] = [await freePort(), await freePort()]
    const sh = [...readme.matchAll(/```sh\n([\s\S]*?)```/g)].map((m) => m[1])
    t.equal(sh.length, 2, 'two shell blocks: start, then curl')
    const upstreamJs = /^node -e "([^"]+)" &$/m.exec(sh[0])
    const command = /^UPSTREAM=127\.0\.0\.1:3000 PORT=8080 (TS_NODE_TRANSPILE_ONLY=1) node (.+)$/m.exec(sh[0])
    if (upstreamJs === null || command === null) throw new Error(`unexpected commands:\n${sh[0]}`)
    const upstream = run(t, root, ['-e', upstreamJs[1].replaceAll('3000', String(up))])
    const r = run(t, root, command[2].split(' '), { ...userEnv, UPSTREAM: `127.0.0.1:${up}`, PORT: String(port), TS_NODE_TRANSPILE_ONLY: '1' })
    const base = `http://127.0.0.1:${port}`
    await answering(`${base}/`, r)
    const printed = /It prints `([^`]+)`/.exec(readme)
    const want = `${printed?.[1].replaceAll('8080', String(port)).replaceAll('3000', String(up))}\n`
    // The server may answer before its stdout line reaches this pipe.
    await waitFor(() => r.out().length >= want.length, 10_000)
    t.equal(r.out(), want, 'prints what the README says')
    const curls = [...sh[1].matchAll(/^curl '?http:\/\/127\.0\.0\.1:8080([^'\s]*)'?\s+# (.+)$/gm)]
    t.equal(curls.length, 2)
    for (const [, path, want] of curls) {
      const got = await text(`${base}${path}`)
      t.equal(got.trimEnd(), want, `curl ${path}`)
    }
    t.equal(await text(`${base}/`), home, 'the home answer, byte for byte')
    r.child.kill('SIGINT')
    t.same(await r.exited, { code: null, signal: 'SIGINT' }, 'Ctrl-C (SIGINT) ends it')
    upstream.child.kill('SIGTERM')
    await upstream.exited
  })
}

