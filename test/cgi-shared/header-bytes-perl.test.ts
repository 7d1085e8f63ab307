/** header-bytes-peers.test.ts again, with the Perl fork server starting the CGI script. */
process.env.PROXYCORE_FORK_SERVER = 'perl'
await import('./header-bytes-peers.test.js')
