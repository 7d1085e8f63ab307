/** Static file adapter: public surface. */
export { staticAdapter, StaticClient, hiddenPath } from './adapter.js'
export { parseStaticOptions, STATIC_DEFAULTS, type PrecompressedEncoding, type StaticOptions } from './options.js'
