/**
 * A polluted Object.prototype (a bug in some other package of the embedder's process) must not
 * become a backend variable: not a FastCGI or SCGI parameter (`PHP_VALUE` reaches php-fpm's ini),
 * not a variable of a started process, with either launcher. spawn() itself reads inherited keys
 * on purpose, so the launcher hands it an object of its own keys only.
 */
import t from 'tap'
import { leakTest } from './fixtures/guard.js'
import { manager } from './fixtures/manager.js'
import { ForkChild, type PipeChild } from '../../src/spawn/fork-server.js'
import { Role, decodePairs, encodeRequestHead } from '../../src/protocols/fastcgi/codec.js'
import { encodeScgiHead } from '../../src/protocols/scgi/netstring.js'

const proto = Object.prototype as unknown as Record<string, unknown>

function polluted<T> (fn: () => T): T {
  proto.PHP_VALUE = 'auto_prepend_file=/etc/passwd'
  try {
    return fn()
  } finally {
    delete proto.PHP_VALUE
  }
}

t.test('FastCGI PARAMS carry the environment\'s own variables only', async (t) => {
  const head = polluted(() => encodeRequestHead(1, Role.RESPONDER, true, { SCRIPT_NAME: '/a.php' }, true))
  const len = head.readUInt16BE(16 + 4)
  t.same([...decodePairs(head.subarray(24, 24 + len))!], [['SCRIPT_NAME', '/a.php']])
  // The UTF-8 path walks the keys its own way.
  const utf8 = polluted(() => encodeRequestHead(1, Role.RESPONDER, true, { SCRIPT_NAME: '/é.php' }, true))
  t.notOk(utf8.includes('PHP_VALUE'), 'not on the UTF-8 path either')
})

t.test('the SCGI netstring carries the environment\'s own variables only', async (t) => {
  const head = polluted(() => encodeScgiHead({ SCRIPT_NAME: '/app' }, 0)).toString('latin1')
  t.equal(head, '41:CONTENT_LENGTH\x000\x00SCGI\x001\x00SCRIPT_NAME\x00/app\x00,')
})

for (const launcher of ['fork-server', 'direct'] as const) {
  leakTest(t, `a started process gets its own variables only (launcher: ${launcher})`, async (t, defer) => {
    const m = manager(defer)
    m.add('cgi', { socketType: 'pipe', binPath: '/bin/sh', launcher, stopTimeout: 300 })
    await m.start()
    const child: PipeChild = polluted(() => m.pipeStarter('cgi').launch({
      argv: ['-c', 'printf "%s|%s" "${GREETING-unset}" "${PHP_VALUE-unset}"'],
      env: { GREETING: 'hi' },
      cwd: '/',
    }))
    t.equal(child instanceof ForkChild, launcher === 'fork-server')
    let out = ''
    child.once('spawn', () => {
      child.stdin?.end()
      child.stdout?.on('data', (c: Buffer) => { out += c.toString() })
    })
    const [code] = await new Promise<[number | null]>((resolve) => child.once('exit', (c: number | null) => resolve([c])))
    await new Promise<void>((resolve) => { if (child.stdout === null || child.stdout.readableEnded) resolve(); else child.stdout.once('end', () => resolve()) })
    t.equal(code, 0)
    t.equal(out, 'hi|unset')
  })
}
