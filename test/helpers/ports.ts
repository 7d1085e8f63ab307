/**
 * Ports for tests that need a number before anything listens on it (a config file a child
 * process reads, a backend that must be down). The picker is the bench's (bench/lib/proc.mjs
 * freePort: a random bindable port from below net.ipv4.ip_local_port_range, which listen(0) and
 * connects never take), one implementation for both.
 */
import { freePort } from '../../bench/lib/proc.mjs'

export { freePort }

/** A loopback port nothing listens on (for a backend that must be down): see freePort. */
export const deadPort = freePort
