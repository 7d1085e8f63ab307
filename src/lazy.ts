/**
 * Load a CommonJS dependency on first use instead of at import time.
 *
 * `import 'proxycore'` should cost what the embedder uses: a proxy with only FastCGI routes never
 * needs undici (~11 MiB RSS for its Pool and the llhttp WASM; src/protocols/http/client.ts), and
 * one without a status page never needs prom-client, ws, yaml or fast-glob (~15 MiB more,
 * measured in docs/design/architecture.md).
 * Each of these packages ships CommonJS, so a synchronous `require` keeps the call sites
 * synchronous; the types still come from `import type`.
 *
 * A CommonJS dependency is never `import`ed, even one needed at once: ESM's `import` sends the file
 * through Node's CommonJS translator, which parses it for export names, and ipaddr.js imported that
 * way left ~7 MiB more anonymous memory in every process than the same file `require`d
 * (docs/design/architecture.md, "Memory"; test/config/no-typebox.test.ts checks it).
 */
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)

export function lazy<T> (id: string): () => T {
  let mod: T | undefined
  return () => (mod ??= require(id) as T)
}
