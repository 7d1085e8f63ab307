/** FastCGI adapter: public surface. */
export { fastcgiAdapter } from './adapter.js'
export { FastcgiClient } from './client.js'
export { FASTCGI_DEFAULTS, parseFastcgiOptions, type FastcgiOptions } from './options.js'
export type { BackendValues } from './discovery.js'
