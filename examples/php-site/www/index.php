<?php
// The home page: which PHP answered, and links to the other pages.
header('Content-Type: text/html; charset=utf-8');
?>
<!doctype html>
<title>proxycore php-site</title>
<h1>PHP <?= PHP_VERSION ?> via <?= htmlspecialchars(PHP_SAPI) ?></h1>
<p>pid <?= getmypid() ?>, SCRIPT_NAME <?= htmlspecialchars($_SERVER['SCRIPT_NAME']) ?></p>
<ul>
  <li><a href="/form.php">a form (POST)</a></li>
  <li><a href="/page.php/hello/world">PATH_INFO</a></li>
  <li><a href="/uploads/photo.jpg/x.php">/uploads/photo.jpg/x.php</a> (refused: 403)</li>
</ul>
