<?php
// /page.php/anything/below: the script is page.php, the rest arrives as PATH_INFO.
header('Content-Type: text/plain; charset=utf-8');
echo 'SCRIPT_NAME=' . $_SERVER['SCRIPT_NAME'] . "\n";
echo 'PATH_INFO=' . ($_SERVER['PATH_INFO'] ?? '') . "\n";
echo 'QUERY_STRING=' . $_SERVER['QUERY_STRING'] . "\n";
