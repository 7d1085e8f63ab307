<?php
// GET shows the form; POST greets the name that was sent.
header('Content-Type: text/html; charset=utf-8');
if ($_SERVER['REQUEST_METHOD'] === 'POST') {
  $name = trim((string)($_POST['name'] ?? ''));
  echo '<p>Hello, ' . htmlspecialchars($name === '' ? 'stranger' : $name) . "!</p>\n";
  exit;
}
?>
<form method="post" action="/form.php">
  <input name="name" placeholder="your name"> <button>send</button>
</form>
