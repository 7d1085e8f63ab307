/**
 * A `listen` address with unbalanced brackets or an unbracketed IPv6 host (`127.0.0.1]:0`,
 * `[::1:0`, `::1]:80`, `::1:80`, `[127.0.0.1]:0`): check said ok and serve bound a guess (the
 * gateway reads any of them as host and port), where a backend or socketName of the same text is
 * refused (`IPv6 addresses need brackets`). Now each is a config issue at its path, exit 2.
 */
import t from 'tap'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import '../../src/index.js'
import { checkConfig } from '../../src/config/check.js'
import { runCli } from '../cli/run.js'
import { guardLeaks } from '../helpers/leaks.js'
import { tempDir } from '../helpers/tmp.js'

t.test('a listen address with stray brackets or a bare IPv6 host is refused', async (t) => {
  for (const [listen, why] of [
    ['127.0.0.1]:0', /not an address "127\.0\.0\.1\]:0"/],
    ['[::1:0', /not an address "\[::1:0"/],
    ['::1]:80', /not an address "::1\]:80"/],
    ['[127.0.0.1]:0', /not an address "\[127\.0\.0\.1\]:0"/],
    ['::1:80', /IPv6 addresses need brackets: \[::1\]:port/],
  ] as const) {
    const got = await checkConfig({ listen: ['127.0.0.1:0', listen], routes: [] })
    t.same(got.map((i) => i.path), ['/listen/1'], `${listen}: one issue, at its index`)
    t.match(got[0]?.message, why, `${listen}: says why`)
  }
  for (const listen of ['127.0.0.1:0', '[::1]:0', '[::]:0', ':0', 'localhost:0', 'unix:/tmp/[x]:1.sock']) {
    t.same(await checkConfig({ listen, routes: [] }), [], `${listen} is fine`)
  }
})

t.test('check: exit 2 at the line', async (t) => {
  guardLeaks(t)
  const dir = tempDir(t, 'pc-audit36-listen-')
  const file = join(dir, 'listen.yaml')
  writeFileSync(file, 'routes: []\nlisten: "::1:80"\n')
  const r = await runCli(['check', file])
  t.equal(r.code, 2)
  t.match(r.stderr, /listen\.yaml:2:\d+: \/listen: IPv6 addresses need brackets/)
  t.notMatch(r.stderr, /\n\s+at |TypeError|RangeError/)
})
