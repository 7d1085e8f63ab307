/** SCGI adapter: public surface. */
export { scgiAdapter, ScgiClient } from './adapter.js'
export { encodeScgiHead } from './netstring.js'
export { parseScgiOptions, SCGI_DEFAULTS, type ScgiOptions } from './options.js'
