/**
 * audit39-isolation.test.ts again, with the Perl fork server: both builds must keep a tenant's
 * CGI programs away from their control channel and from every other tenant.
 */
process.env.PROXYCORE_FORK_SERVER = 'perl'
await import('./audit39-isolation.test.js')
