/**
 * Ports for tests that need a number before anything listens on it (a config file a child
 * process reads, a backend that must be down). Asking the kernel (listen on 0, close, hand out the
 * number) races: the next listen(0) of any test running alongside, or a connect's local port, may
 * get the same number before our process binds it — CI once saw `proxycore serve` fail with
 * EADDRINUSE that way. The kernel picks those ports from net.ipv4.ip_local_port_range only, so the
 * ports handed out here are drawn at random from below that range and checked bindable: only
 * another caller of this helper could pick the same one.
 */
import { readFileSync } from 'node:fs'
import { createServer } from 'node:net'

const FLOOR = 10_000

function ephemeralLow (): number {
  try {
    const low = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0])
    return Number.isInteger(low) && low > FLOOR + 1000 ? low : 32_768
  } catch {
    return 32_768
  }
}

async function bindable (port: number): Promise<boolean> {
  const s = createServer()
  return await new Promise<boolean>((resolve) => {
    s.once('error', () => resolve(false))
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)))
  })
}

/** A loopback port nothing listens on now, outside the range the kernel hands out for port 0. */
export async function freePort (): Promise<number> {
  const low = ephemeralLow()
  for (let i = 0; i < 200; i++) {
    const port = FLOOR + Math.floor(Math.random() * (low - FLOOR))
    if (await bindable(port)) return port
  }
  throw new Error(`no free port found in ${FLOOR}-${low - 1} after 200 tries`)
}

/** A loopback port nothing listens on (for a backend that must be down): see freePort. */
export const deadPort = freePort
