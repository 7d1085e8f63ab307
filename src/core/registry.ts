/**
 * Protocol adapters by name. The core never imports a protocol: built-in adapters register
 * themselves from the package entry point, custom ones through `registerAdapter()` or
 * `createProxy({ adapters })`.
 */
import type { ProtocolAdapter } from './types.js'

const registry = new Map<string, ProtocolAdapter>()

const NAME = /^[a-z][a-z0-9+.-]*$/

export function registerAdapter (adapter: ProtocolAdapter): void {
  if (!NAME.test(adapter.name)) throw new TypeError(`adapter name ${JSON.stringify(adapter.name)} must match ${NAME}`)
  registry.set(adapter.name, adapter)
}

export function getAdapter (name: string, extra?: readonly ProtocolAdapter[]): ProtocolAdapter | undefined {
  if (extra !== undefined) for (const a of extra) if (a.name === name) return a
  return registry.get(name)
}

export function adapterNames (extra?: readonly ProtocolAdapter[]): string[] {
  return [...new Set([...(extra ?? []).map((a) => a.name), ...registry.keys()])].sort()
}
