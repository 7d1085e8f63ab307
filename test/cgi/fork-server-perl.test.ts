/**
 * fork-server.test.ts again, with the Perl fork server: the compiled one is the default wherever
 * npm install could build it, and both must keep one contract.
 */
process.env.PROXYCORE_FORK_SERVER = 'perl'
await import('./fork-server.test.js')
