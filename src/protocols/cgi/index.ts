/** CGI adapter (RFC 3875 over pipes): public surface. */
export { cgiAdapter, CgiClient } from './adapter.js'
export { CGI_DEFAULTS, parseCgiOptions, type CgiOptions } from './options.js'
