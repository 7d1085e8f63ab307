#!/bin/sh
# --big CGI backend. POST: sha256 of the CONTENT_LENGTH bytes on stdin, answered as "<sha256>".
# GET ?N: the first N bytes of `seq 1 inf` (lib/seq.mjs computes the same digest in Node).
if [ "$REQUEST_METHOD" = POST ]; then
  sum=$(head -c "${CONTENT_LENGTH:-0}" | sha256sum)
  printf 'Content-Type: text/plain\r\n\r\n%s\n' "${sum%% *}"
  exit 0
fi
n=$QUERY_STRING
case "$n" in *[!0-9]*|'') printf 'Status: 400 Bad Request\r\nContent-Type: text/plain\r\n\r\nsize?\n'; exit 0;; esac
printf 'Content-Type: application/octet-stream\r\nContent-Length: %s\r\n\r\n' "$n"
seq 1 inf | head -c "$n"
