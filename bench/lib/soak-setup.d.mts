// Types for the part of bench/lib/soak-setup.mjs the tests use.
export const ADAPTERS: Array<{ id: string, prefix: string, script: string, pattern: 'gen' | 'seq', by: 'soak' | 'proxycore' }>
export function missingPeers (): string[]
