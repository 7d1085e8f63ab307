/**
 * emfile-shortage.test.ts with no CGI request before the shortage: the fork server is first
 * started while the proxy is out of descriptors (its listening socket cannot be created), the
 * request gets 503 ERR_NO_DESCRIPTORS, and once descriptors free up the fork server starts and
 * serves (before the fix it stayed broken: every later CGI request was 502 ERR_CGI_SPAWN).
 * emfile-fork-server-cold-perl.test.ts does the same with the Perl fork server.
 */
process.env.PROXYCORE_TEST_EMFILE_COLD = '1'
await import('./emfile-shortage.test.js')
