/**
 * fork-server-lost-stdio.test.ts again, with the Perl fork server (the compiled one is the
 * default wherever npm install could build it): both helpers report S the same way.
 */
process.env.PROXYCORE_FORK_SERVER = 'perl'
await import('./fork-server-lost-stdio.test.js')
