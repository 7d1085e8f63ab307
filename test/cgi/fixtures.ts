/**
 * CGI fixture scripts, one vocabulary for every CGI test (STYLE §8): `resp.sh` picks a malformed
 * or special head by its query string, the others each prove one pipe behaviour.
 */
import { join } from 'node:path'
import type { RouteConfig } from '../../src/config/schema.js'
import { cgiProxy, tempDir, writeScripts, type CgiProxy } from './harness.js'

const HEAD = "printf 'Content-Type: text/plain\\n\\n'"

export const SH_SCRIPTS: Record<string, string> = {
  'env.sh': `#!/bin/sh\n${HEAD}\nenv\n`,
  // AC-37: cwd and argv (the query never becomes arguments).
  'sub/argv.sh': `#!/bin/sh\n${HEAD}\nprintf 'pwd=%s\\nargc=%s\\nargv=%s\\n' "$(pwd)" "$#" "$*"\n`,
  // AC-32: reads exactly CONTENT_LENGTH bytes.
  'sha.sh': `#!/bin/sh\n${HEAD}\nprintf 'len=%s\\n' "\${CONTENT_LENGTH-unset}"\nhead -c "\${CONTENT_LENGTH:-0}" | sha256sum\n`,
  // Echo the body back while it is still arriving (large bodies both ways).
  'cat.sh': "#!/bin/sh\nprintf 'Content-Type: application/octet-stream\\n\\n'\nexec head -c \"$CONTENT_LENGTH\"\n",
  // RFC 3875 §3.4: 1 MiB of output before reading a single byte of the body.
  'write-first.sh': "#!/bin/sh\nprintf 'Content-Type: application/octet-stream\\n\\n'\nhead -c 1048576 /dev/zero\nhead -c \"$CONTENT_LENGTH\" | sha256sum\n",
  // AC-92 exit conditions.
  'empty.sh': '#!/bin/sh\nexit 0\n',
  'partial.sh': "#!/bin/sh\nprintf 'Content-Type: text/pl'\n",
  'fail-after.sh': `#!/bin/sh\n${HEAD}\nprintf 'body'\nexit 1\n`,
  'killself.sh': `#!/bin/sh\n${HEAD}\nhead -c 10240 /dev/zero\nkill -9 $$\n`,
  'ctonly.sh': `#!/bin/sh\n${HEAD}\n`,
  // AC-91: 1 MiB of stderr before the response.
  'stderr.sh': `#!/bin/sh\nhead -c 1048576 /dev/zero | tr '\\0' 'e' >&2\n${HEAD}\nprintf ok\n`,
  // AC-94: endless body, a backgrounded grandchild in the same group, the leader's pid in a header.
  'big.sh': "#!/bin/sh\nsleep 300 &\nprintf 'Content-Type: application/octet-stream\\nX-Pid: %s\\n\\n' \"$$\"\nexec head -c 104857600 /dev/zero\n",
  // AC-93: no head for a long time (pid written next to the script: cwd is its directory).
  'slowhead.sh': '#!/bin/sh\necho $$ > slowhead.pid\nsleep 300 &\nsleep 300\n',
  // AC-93 (b): a head, then silence.
  'slowbody.sh': "#!/bin/sh\nsleep 300 &\nprintf 'Content-Type: text/plain\\nX-Pid: %s\\n\\nfirst' \"$$\"\nsleep 300\n",
  // AC-95: descriptors the script inherited (ls's own directory fd excepted).
  'fds.sh': `#!/bin/sh\n${HEAD}\nexec ls -l /proc/self/fd/\n`,
  // Blocks until the client sends its one body byte (admission tests).
  'hold.sh': `#!/bin/sh\nhead -c 1 >/dev/null\n${HEAD}\nprintf held\n`,
  'nph-ok.sh': "#!/bin/sh\nprintf 'HTTP/1.1 304 Not Modified\\r\\n\\r\\n'\n",
  'nph-bad.sh': "#!/bin/sh\nprintf 'HTTP/1.1 30 FooBar\\r\\n\\r\\n'\n",
  'nph-200.sh': "#!/bin/sh\nprintf 'HTTP/1.1 200 OK\\r\\nContent-Type: text/plain\\r\\nConnection: keep-alive\\r\\n\\r\\nnph body'\n",
  'resp.sh': `#!/bin/sh
pad=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa
case "$QUERY_STRING" in
  cr) printf 'Content-Type: text/plain\\nX-A: a\\rSet-Cookie: s=1\\n\\nbody' ;;
  nocolon) printf 'NoColonLine\\n\\n' ;;
  badname) printf 'Bad Name: x\\n\\n' ;;
  fold) printf 'Content-Type: text/plain\\nX-C: c\\n folded\\n\\n' ;;
  huge) printf 'Content-Type: text/plain\\n'; i=0; while [ $i -lt 1000 ]; do printf 'X-Pad-%s: %s\\n' $i $pad; i=$((i+1)); done; printf '\\n' ;;
  cookie) printf 'Content-Type: text/html\\r\\nSet-Cookie: ok=1\\r\\n\\r\\nok' ;;
  cl-long) printf 'Content-Type: text/plain\\nContent-Length: 5\\n\\n'; head -c 100 /dev/zero | tr '\\0' z ;;
  cl-short) printf 'Content-Type: text/plain\\nContent-Length: 100\\n\\nshort' ;;
  te) printf 'Content-Type: text/plain\\nTransfer-Encoding: gzip\\n\\n' ;;
  status30) printf 'Status: 30\\nContent-Type: text/plain\\n\\n' ;;
  twostatus) printf 'Status: 200\\nStatus: 201\\nContent-Type: text/plain\\n\\n' ;;
  status404) printf 'Status: 404 Not Found\\nContent-Type: text/plain\\n\\nnope' ;;
  noct) printf 'Status: 200\\n\\n' ;;
  abs) printf 'Location: http://x.example/\\n\\n' ;;
  doc301) printf 'Status: 301 Moved\\nLocation: http://x.example/\\nContent-Type: text/plain\\n\\nmoved' ;;
  local) printf 'Location: /perl/hello.pl?from=sh\\n\\n' ;;
  localcookie) printf 'Location: /home\\nSet-Cookie: sid=abc\\nCache-Control: no-store\\nContent-Type: text/plain\\n\\nRedirecting\\n' ;;
  loop) printf 'Location: /cgi-bin/resp.sh?loop\\n\\n' ;;
  localsame) printf 'Location: /cgi-bin/resp.sh?show\\n\\n' ;;
  show) printf 'Content-Type: text/plain\\n\\n'; echo "method=$REQUEST_METHOD len=\${CONTENT_LENGTH:-unset} rs=$REDIRECT_STATUS ru=$REDIRECT_URL rq=$REDIRECT_QUERY_STRING" ;;
esac
`
}

export const PERL_SCRIPTS: Record<string, string> = {
  'hello.pl': `#!/usr/bin/perl -wT
use strict;
print "Content-Type: text/plain\\r\\n\\r\\n";
print "perl method=$ENV{REQUEST_METHOD} query=$ENV{QUERY_STRING} length=", ($ENV{CONTENT_LENGTH} // 'unset'), "\\n";
`,
  // Perl that writes before it reads, in one process (no helper processes in the way).
  'echo.pl': `#!/usr/bin/perl -wT
use strict;
binmode STDOUT; binmode STDIN;
$| = 1;
print "Content-Type: application/octet-stream\\r\\n\\r\\n";
print "w" x 65536 for 1 .. 16;
my $left = $ENV{CONTENT_LENGTH} || 0;
while ($left > 0) { my $n = read(STDIN, my $buf, $left > 65536 ? 65536 : $left); last unless $n; print $buf; $left -= $n }
`
}

/**
 * The standard layout: `/cgi-bin/` runs the shell scripts directly (shebang, no interpreter),
 * `/nph/` is the same directory with NPH on, `/perl/` runs perl scripts through `perl -wT`.
 */
export async function standardProxy (t: Parameters<typeof tempDir>[0], extraRoutes: RouteConfig[] = [], route: Partial<RouteConfig> = {}): Promise<CgiProxy & { dir: string, cgiDir: string }> {
  const dir = tempDir(t)
  const cgiDir = join(dir, 'cgi')
  writeScripts(cgiDir, SH_SCRIPTS)
  writeScripts(join(dir, 'perl'), PERL_SCRIPTS)
  const p = await cgiProxy(t, {
    cgi: {},
    perl: { binPath: 'perl -wT' }
  }, [
    ...extraRoutes,
    { match: { prefix: '/cgi-bin/' }, protocol: 'cgi', spawn: 'cgi', docroot: cgiDir, stripPrefix: true, ...route },
    { match: { prefix: '/nph/' }, protocol: 'cgi', spawn: 'cgi', docroot: cgiDir, stripPrefix: true, options: { nph: true } },
    { match: { prefix: '/perl/' }, protocol: 'cgi', spawn: 'perl', docroot: join(dir, 'perl'), stripPrefix: true }
  ])
  return { ...p, dir, cgiDir }
}
