#!/bin/sh
# A CGI script in sh (RFC 3875): the head, an empty line, the body.
printf 'Content-Type: text/html; charset=utf-8\r\n\r\n'
printf '<!doctype html><title>CGI (sh)</title><h1>CGI script (sh)</h1>\n'
printf '<p>pid %s, %s %s</p><p><a href="/">home</a></p>\n' "$$" "$REQUEST_METHOD" "$SCRIPT_NAME"
