export interface LoadResult {
  tool: 'wrk' | 'autocannon'
  rps: number
  requests: number
  seconds: number
  p50: number
  p90: number
  p99: number
  maxMs: number
  errors: number
  non2xx: number
  transferPerSec: number
}
export function findWrk (): string | null
export function parseWrk (text: string): LoadResult
export function parseAutocannon (r: unknown): LoadResult
export function loadTool (): Promise<{ name: 'wrk', path: string } | { name: 'autocannon' } | null>
export function load (tool: { name: string, path?: string }, url: string, opts?: { connections?: number, seconds?: number }): Promise<LoadResult>
