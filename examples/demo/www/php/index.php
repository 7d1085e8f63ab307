<?php
// Served by php-cgi, spawned by proxycore (socket on fd 0) and reached over FastCGI.
header('Content-Type: text/html; charset=utf-8');
?><!doctype html><title>PHP</title>
<h1>PHP <?= htmlspecialchars(PHP_VERSION) ?> via FastCGI</h1>
<p>pid <?= getmypid() ?>, <?= htmlspecialchars($_SERVER['REQUEST_METHOD']) ?> <?= htmlspecialchars($_SERVER['SCRIPT_NAME']) ?></p>
<p><a href="/">home</a></p>
