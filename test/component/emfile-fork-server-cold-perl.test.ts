/**
 * emfile-fork-server-cold.test.ts with the Perl fork server: there the first thing to fail out of
 * descriptors is writing its script into the private directory.
 */
process.env.PROXYCORE_FORK_SERVER = 'perl'
process.env.PROXYCORE_TEST_EMFILE_COLD = '1'
await import('./emfile-shortage.test.js')
