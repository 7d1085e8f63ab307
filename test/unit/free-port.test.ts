// The tests' and the bench's port picker (bench/lib/proc.mjs freePort): a port the kernel never
// hands to listen(0) or a connect (below ip_local_port_range), and one nothing listens on.
import t from 'tap'
import { readFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { guardLeaks } from '../helpers/leaks.js'
import { freePort } from '../helpers/ports.js'

guardLeaks(t)

const low = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0])

t.test('ports come from below the ephemeral range and can be bound', async (t) => {
  for (let i = 0; i < 20; i++) {
    const port = await freePort()
    t.ok(port >= 10_000 && port < low, `${port} in 10000-${low - 1}`)
    const s = createServer()
    await new Promise<void>((resolve, reject) => { s.once('error', reject); s.listen(port, '127.0.0.1', resolve) })
    await new Promise<void>((resolve) => s.close(() => resolve()))
  }
})
