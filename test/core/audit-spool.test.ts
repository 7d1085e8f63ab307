/**
 * Spooling a request body when the process is out of file descriptors (audit 2026-12, second
 * pass): EMFILE for real, in a child node process started under `prlimit --nofile` (the built
 * dist's spoolBody), its table filled with /dev/null until open(2) fails. The temp file cannot be
 * created: the body is refused with 503 ERR_NO_DESCRIPTORS, its message naming EMFILE (it was a
 * 500 ERR_INTERNAL before that code), nothing is left in the spool directory, and once descriptors
 * are free again the same process spools, and replays, the next body whole.
 */
import t from 'tap'
import { spawn } from 'node:child_process'
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { guardLeaks } from '../helpers/leaks.js'
import { ensureBuilt } from '../cli/run.js'

guardLeaks(t, { timeoutMs: 10_000 })

const REPO = fileURLToPath(new URL('../../', import.meta.url))

t.test('EMFILE while a body goes to disk: a clear refusal, no temp file left, the next body whole', async (t) => {
  if (!existsSync('/usr/bin/prlimit')) { t.pass('prlimit is not installed', { skip: 'needs util-linux prlimit' }); return }
  await ensureBuilt()
  const dir = mkdtempSync(join(tmpdir(), 'pc-audit-spool-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const code = `
    import { openSync, closeSync } from 'node:fs'
    import { Readable } from 'node:stream'
    import { spoolBody, replayBody } from ${JSON.stringify(join(REPO, 'dist/core/body-spool.js'))}
    const dir = process.argv[1]
    const body = Buffer.alloc(200 * 1024, 0x61)
    body.write('first', 0); body.write('last', body.length - 4)
    const read = (r) => new Promise((resolve, reject) => { const c = []; r.on('data', (d) => c.push(d)); r.once('end', () => resolve(Buffer.concat(c))); r.once('error', reject) })
    const fillers = []
    for (let i = 0; i < 4096; i++) { try { fillers.push(openSync('/dev/null', 'r')) } catch (err) { if (err.code !== 'EMFILE') throw err; break } }
    let refused
    try {
      const s = await spoolBody(Readable.from([body]), { maxBytes: 1 << 20, tmpDir: dir })
      await s.cleanup()
      refused = { code: 'SPOOLED' }
    } catch (err) {
      refused = { code: err.code, status: err.status, message: err.message }
    }
    for (const fd of fillers) closeSync(fd)
    const s = await spoolBody(Readable.from([body]), { maxBytes: 1 << 20, tmpDir: dir })
    const first = await read(s.body)
    const again = await read(replayBody(s.body))
    await s.cleanup()
    console.log(JSON.stringify({ fillers: fillers.length, refused, length: s.length, first: first.equals(body), again: again.equals(body) }))`
  // 64 descriptors: node's own (a few dozen) and the fillers; the fillers take what is left.
  const child = spawn('/usr/bin/prlimit', ['--nofile=64:64', process.execPath, '--input-type=module', '-e', code, dir], { stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  let err = ''
  child.stdout.on('data', (c: Buffer) => { out += c.toString() })
  child.stderr.on('data', (c: Buffer) => { err += c.toString() })
  const exit = await new Promise<number | null>((resolve) => child.once('close', resolve))
  t.equal(exit, 0, 'the child did not crash', { err })
  const r = JSON.parse(out.trim().split('\n').pop() ?? '{}') as { fillers: number, refused: { code: string, status: number, message: string }, length: number, first: boolean, again: boolean }
  t.ok(r.fillers > 0, `the descriptor table was filled (${r.fillers} /dev/null)`)
  t.match(r.refused, { code: 'ERR_NO_DESCRIPTORS', status: 503, message: /EMFILE/ }, 'refused with 503 ERR_NO_DESCRIPTORS, the message names EMFILE')
  t.same(readdirSync(dir), [], 'no temp file left in the spool directory')
  t.equal(r.length, 200 * 1024)
  t.ok(r.first && r.again, 'with descriptors free again: the next body whole, and again from its first byte')
})
