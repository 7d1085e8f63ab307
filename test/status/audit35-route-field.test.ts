/**
 * The combined access log's `route=` field is unquoted, one of the space-separated `key=value`
 * fields after the user agent. A route name is free text (`name: "php app"`); written as it is,
 * its space ended the field and the rest read as fields of its own: a route named
 * `files upstream=203.0.113.9:80` gave every line of that route two `upstream=` fields, the first
 * one a lie, for a reader that splits on spaces (`awk`, `route=(\S+)`, a Grok pattern). A space in
 * that field is written `\x20`, as other bytes outside printable ASCII are; the JSON format keeps
 * the name as it is. Through the real `proxycore serve`.
 */
import t from 'tap'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { guardLeaks, waitFor } from '../helpers/leaks.js'
import { tempDir } from '../helpers/tmp.js'
import { get } from '../helpers/servers.js'
import { serveKilled } from '../cli/run.js'

const NAME = 'files upstream=203.0.113.9:80 upstream_status=200'

const config = (dir: string, format: string): string => `listen: 127.0.0.1:0
accessLog: { path: access.log, format: ${format} }
routes:
  - { name: ${JSON.stringify(NAME)}, match: { prefix: / }, protocol: static, docroot: ${JSON.stringify(dir)} }
`

const lines = (file: string): string[] => existsSync(file) ? readFileSync(file, 'latin1').split('\n').filter((l) => l !== '') : []

for (const format of ['combined', 'json'] as const) {
  t.test(`serve, ${format}: a route name with spaces stays one field`, async (t) => {
    guardLeaks(t, { timeoutMs: 15_000 })
    const dir = tempDir(t, 'pc-audit35-route-field-')
    writeFileSync(join(dir, 'hello.txt'), 'hello')
    const file = join(dir, 'proxycore.yaml')
    writeFileSync(file, config(dir, format))
    const log = join(dir, 'access.log')
    const { s } = await serveKilled(t, file)
    t.equal((await get(`${s.url}/hello.txt`)).status, 200)
    t.ok(await waitFor(() => lines(log).length >= 1, 20_000), 'a line')
    const [line] = lines(log)
    if (format === 'json') {
      t.equal(JSON.parse(line).route, NAME, 'JSON: the name as written')
      return
    }
    // The fields after the quoted user agent, split as log readers split them.
    const fields = line.slice(line.lastIndexOf('" ') + 2).split(' ')
    t.same(fields.map((f) => f.slice(0, f.indexOf('='))), ['route', 'upstream', 'upstream_status', 'rt', 'uht', 'code'], line)
    t.equal(fields[0], String.raw`route=files\x20upstream=203.0.113.9:80\x20upstream_status=200`)
    t.equal(fields[1], String.raw`upstream=files\x20upstream=203.0.113.9:80\x20upstream_status=200`, 'a static route: its name is the upstream')
    t.equal(fields[2], 'upstream_status=200')
  })
}
