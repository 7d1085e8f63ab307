/**
 * emfile-shortage.test.ts with the fork server's helper killed (SIGKILL) after the warm-up: the
 * CGI request made out of descriptors must restart it, spawn() fails with EMFILE, and the request
 * gets 503 ERR_NO_DESCRIPTORS (before: 502 ERR_CGI_FORK_SERVER "could not be started"). Once
 * descriptors free up a new helper starts and serves.
 */
process.env.PROXYCORE_TEST_EMFILE_KILL_HELPER = '1'
await import('./emfile-shortage.test.js')
