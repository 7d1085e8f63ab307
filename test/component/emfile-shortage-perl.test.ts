/**
 * emfile-shortage.test.ts again, with the Perl fork server (the compiled one is the default
 * wherever npm install could build it): PROXYCORE_FORK_SERVER=perl reaches the CLI through the
 * environment it is started with, and the test checks that perl is the helper that runs.
 */
process.env.PROXYCORE_FORK_SERVER = 'perl'
await import('./emfile-shortage.test.js')
