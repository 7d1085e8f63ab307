/**
 * A 200 MiB chunked upload to a CGI script that reads its stdin slowly (perl, sleeping between
 * reads: the pause is in the peer) goes through the disk spool and a backpressured pump: the
 * proxy's RSS grows by a bounded amount (< 100 MiB, half the body: 40-60 MiB measured on Node 20-24,
 * most of it garbage not yet collected), and the script gets every byte.
 * The client is a child process (so the RSS measured is the proxy's): it writes one reused 1 MiB
 * buffer, honouring backpressure.
 */
import t from 'tap'
import { spawn } from 'node:child_process'
import { guardLeaks, openFds, waitFor } from '../helpers/leaks.js'
import { cgiProxy, tempDir, writeScripts } from '../cgi/harness.js'

const TOTAL = 200 * 1024 * 1024
const PIECE = 1024 * 1024

t.test('200 MiB chunked upload to a slow-reading perl CGI: RSS stays bounded', async (t) => {
  guardLeaks(t)
  const dir = tempDir(t)
  writeScripts(dir, {
    // Reads 256 KiB at a time with a 2 ms nap between reads; answers the byte count and sha256.
    'slow.pl': [
      '#!/usr/bin/perl',
      'use strict; use Digest::SHA;',
      'binmode STDIN; my $sha = Digest::SHA->new(256); my $n = 0; my $buf;',
      'while (1) { my $r = sysread(STDIN, $buf, 262144); die "read: $!" unless defined $r; last if $r == 0; $n += $r; $sha->add($buf); select(undef, undef, undef, 0.002); }',
      'print "Content-Type: text/plain\\r\\n\\r\\n$n $ENV{CONTENT_LENGTH} ", $sha->hexdigest;',
      '',
    ].join('\n'),
  })
  const p = await cgiProxy(t, { perl: {} }, [{ protocol: 'cgi', spawn: 'perl', docroot: dir, match: { prefix: '/' }, maxBodySize: '1GiB', timeouts: { headers: '120s' } }])

  // The client is a child process, so the RSS measured here is the proxy's alone.
  const client = `
    const http = require('node:http'); const crypto = require('node:crypto')
    const piece = Buffer.alloc(${PIECE}); for (let i = 0; i < piece.length; i++) piece[i] = (i * 31) & 0xff
    const h = crypto.createHash('sha256'); for (let o = 0; o < ${TOTAL}; o += piece.length) h.update(piece)
    const want = h.digest('hex')
    process.stdout.write(want + '\\n')
    const req = http.request(process.argv[1], { method: 'POST', agent: false, headers: { 'transfer-encoding': 'chunked' } }, (res) => {
      let b = ''; res.setEncoding('latin1'); res.on('data', (d) => { b += d }); res.on('end', () => process.stdout.write(res.statusCode + ' ' + b + '\\n'))
    })
    req.on('error', (e) => { process.stdout.write('error ' + e.message + '\\n') })
    let sent = 0
    const pump = () => { while (sent < ${TOTAL}) { sent += piece.length; if (!req.write(piece)) { req.once('drain', pump); return } } req.end() }
    pump()
  `
  ;(globalThis as { gc?: () => void }).gc?.()
  const base = process.memoryUsage().rss
  let peak = base
  const sampler = setInterval(() => { peak = Math.max(peak, process.memoryUsage().rss) }, 25)
  t.teardown(() => clearInterval(sampler))

  let spoolSeen = false
  const spoolWatch = setInterval(() => { if ([...openFds().values()].some((f) => f.includes('proxycore-spool-'))) spoolSeen = true }, 100)
  t.teardown(() => clearInterval(spoolWatch))

  const child = spawn(process.execPath, ['-e', client, `${p.url}/slow.pl`], { stdio: ['ignore', 'pipe', 'inherit'] })
  let out = ''
  child.stdout.setEncoding('latin1')
  child.stdout.on('data', (d: string) => { out += d })
  const exited = await new Promise<boolean>((resolve) => {
    const deadline = setTimeout(() => { child.kill('SIGKILL'); resolve(false) }, 180_000)
    child.once('close', () => { clearTimeout(deadline); resolve(true) })
  })
  t.ok(exited, 'the client finished within 180 s')
  const [want = '', answer = ''] = out.split('\n')
  clearInterval(sampler)
  clearInterval(spoolWatch)
  t.equal(answer, `200 ${TOTAL} ${TOTAL} ${want}`, 'every byte reached the script, in order')
  t.ok(spoolSeen, 'the body went through the disk spool')
  const growth = peak - base
  t.ok(growth < 100 * 1024 * 1024, `RSS growth ${(growth / 1048576).toFixed(1)} MiB < 100 MiB (the body is 200 MiB)`)
  t.ok(await waitFor(() => ![...openFds().values()].some((f) => f.includes('proxycore-spool-')), 5000), 'spool fd closed')
})
