<?php
// --big FastCGI backend (php-fpm, php-cgi). POST: sha256 of php://input read in 64 KiB chunks,
// answered as "<sha256> <bytes>" (needs enable_post_data_reading=Off so PHP streams the body
// instead of buffering it first, and post_max_size=0). GET ?N: N bytes of the lib/gen.mjs stream
// (64 KiB blocks of xorshift32 noise, each stamped with its block index as a uint64 LE), flushed
// block by block.
if ($_SERVER['REQUEST_METHOD'] === 'POST') {
  $h = hash_init('sha256');
  $n = 0;
  $in = fopen('php://input', 'rb');
  while (($c = fread($in, 65536)) !== false && $c !== '') { hash_update($h, $c); $n += strlen($c); }
  header('Content-Type: text/plain');
  echo hash_final($h), ' ', $n, "\n";
  exit;
}
$total = (int)$_SERVER['QUERY_STRING'];
$B = 65536;
$x = 0x9e3779b9;
$w = [];
for ($i = 0; $i < $B / 4; $i++) {
  $x ^= ($x << 13) & 0xFFFFFFFF;
  $x ^= $x >> 17;
  $x ^= ($x << 5) & 0xFFFFFFFF;
  $w[] = $x;
}
$base = pack('V*', ...$w);
header('Content-Type: application/octet-stream');
header('Content-Length: ' . $total);
for ($i = 0, $left = $total; $left > 0; $i++, $left -= $B) {
  $n = min($B, $left);
  echo $n >= 8 ? pack('P', $i) . substr($base, 8, $n - 8) : substr($base, 0, $n);
  flush();
}
