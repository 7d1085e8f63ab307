#!/usr/bin/env bash
# Installs the real third-party peers the integration tests and benchmarks talk to.
# Debian packages only; safe to run again. Needs root (CI runs as root).
set -euo pipefail

pkgs=(
  php-cgi php-fpm            # FastCGI: php-cgi (spawned) and php-fpm (external pool)
  fcgiwrap                   # FastCGI -> CGI bridge, runs shell scripts
  uwsgi-core uwsgi-plugin-python3  # SCGI (--scgi-socket) and native uwsgi (--socket)
  git                        # git http-backend through the CGI adapter
  perl                       # perl CGI scripts
  nginx-light lighttpd       # benchmark peers
  wrk                        # load generator for the benchmarks
  chromium                   # status page screenshot test
  util-linux procps          # setpriv, prlimit, ps
  gcc libc6-dev              # builds the compiled CGI fork server at npm install (else perl's)
)

if [ "$(id -u)" != 0 ]; then
  echo "install-peers: needs root to apt-get install: ${pkgs[*]}" >&2
  exit 1
fi

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-peers: all peers present"
  exit 0
fi

export DEBIAN_FRONTEND=noninteractive
# Never let package installs start services (nginx, php-fpm, lighttpd) on the machine:
# the tests and benchmarks start their own instances on loopback ports.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod +x "$policy"; created_policy=1
fi
trap '[ $created_policy = 1 ] && rm -f "$policy"' EXIT

apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-peers: installed ${missing[*]}"
