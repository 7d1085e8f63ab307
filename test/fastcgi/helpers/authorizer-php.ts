/**
 * php-cgi as a FastCGI authorizer and responder, shared by the authorizer failover and passive
 * health tests (test/fastcgi/authorizer-failover-next.test.ts, authorizer-health-attempts.test.ts).
 * One docroot holds both scripts; a sound php-cgi serves them, and `flaky()` starts a second
 * php-cgi (HANG=1) on the same scripts whose authorizer, for a query with `hang`, logs a byte to
 * `hung.log` and sleeps 15 s (beyond every wait there) instead of answering.
 */
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { startPhpCgi, tempDir } from './peers.js'

type Tap = Parameters<typeof tempDir>[0]

/** 200 with a variable for the responder (X_AUTH: `sound`, or `flaky` from the HANG=1 php-cgi). */
export const AUTH_PHP = `<?php
if (getenv('FCGI_ROLE') !== 'AUTHORIZER') { http_response_code(500); exit; }
if (getenv('HANG') === '1' && strpos($_SERVER['QUERY_STRING'] ?? '', 'hang') !== false) {
  file_put_contents(__DIR__ . '/hung.log', "x", FILE_APPEND | LOCK_EX);
  sleep(15);
}
header('Variable-X-Auth: ' . (getenv('HANG') === '1' ? 'flaky' : 'sound'));`
/** The responder: which authorizer let the request through. */
export const APP_PHP = '<?php echo "app by=", getenv("X_AUTH") ?: "-";'

export interface AuthorizerPhp {
  /** The docroot with auth.php and app.php. */
  dir: string
  /** The sound php-cgi's address (`unix:...`). */
  address: string
  /** Start a php-cgi with HANG=1 and `children` workers (each hung request holds one); its address. */
  flaky: (children: number) => Promise<string>
  /** How many requests the flaky php-cgi hung on so far. */
  hung: () => number
}

export async function authorizerPhp (t: Tap, prefix: string): Promise<AuthorizerPhp> {
  const dir = tempDir(t, prefix)
  writeFileSync(join(dir, 'auth.php'), AUTH_PHP)
  writeFileSync(join(dir, 'app.php'), APP_PHP)
  const php = await startPhpCgi(t, dir, 2)
  return {
    dir,
    address: `unix:${php.socketPath}`,
    flaky: async (children) => `unix:${(await startPhpCgi(t, tempDir(t, `${prefix}flaky-`), children, { HANG: '1' })).socketPath}`,
    hung: () => { try { return readFileSync(join(dir, 'hung.log'), 'utf8').length } catch { return 0 } },
  }
}
