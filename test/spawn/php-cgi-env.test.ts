/**
 * childEnvironment (src/spawn/spec.ts): php-cgi's compiled-in PHP_FCGI_MAX_REQUESTS of 500 makes it
 * exit by itself, so a spawn that speaks php-cgi's vocabulary (PHP_FCGI_CHILDREN) or runs php-cgi
 * as a FastCGI server gets PHP_FCGI_MAX_REQUESTS=0 unless it sets its own; nothing else gets it.
 * (The end-to-end check, 521 requests to one php-cgi spawned without PHP_FCGI_CHILDREN, is in
 * test/docs/guide-php-claims.test.ts.)
 */
import t from 'tap'
import { childEnvironment, resolveSpec } from '../../src/spawn/spec.js'
import type { SpawnSpec } from '../../src/spawn/types.js'

const env = (spec: Partial<SpawnSpec>): Record<string, string> =>
  childEnvironment(resolveSpec('s', { socketName: '127.0.0.1:0', ...spec } as SpawnSpec))

t.test('PHP_FCGI_MAX_REQUESTS=0 for php-cgi by name or by vocabulary, never over an explicit value', async (t) => {
  t.equal(env({ binPath: '/usr/bin/php-cgi' }).PHP_FCGI_MAX_REQUESTS, '0', 'php-cgi without PHP_FCGI_CHILDREN')
  t.equal(env({ binPath: '/usr/bin/php-cgi8.2 -d display_errors=0' }).PHP_FCGI_MAX_REQUESTS, '0', 'the versioned binary, with arguments')
  t.equal(env({ binPath: '/usr/bin/php-cgi', environment: { PHP_FCGI_MAX_REQUESTS: '200' } }).PHP_FCGI_MAX_REQUESTS, '200', 'an explicit value stands')
  t.equal(env({ binPath: '/opt/app/server', environment: { PHP_FCGI_CHILDREN: '4' } }).PHP_FCGI_MAX_REQUESTS, '0', 'any program given PHP_FCGI_CHILDREN')
  t.notOk('PHP_FCGI_MAX_REQUESTS' in env({ binPath: '/usr/bin/python3 app.py' }), 'another program: nothing added')
  t.notOk('PHP_FCGI_MAX_REQUESTS' in env({ binPath: '/usr/bin/php-fpm8.2' }), 'php-fpm: nothing added')
  t.notOk('PHP_FCGI_MAX_REQUESTS' in env({ binPath: '/usr/bin/php-cgi', socketType: 'pipe', socketName: undefined }), 'php-cgi run as CGI, one process per request: nothing added')
})
