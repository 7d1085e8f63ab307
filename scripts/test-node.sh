#!/usr/bin/env bash
# Run the test suite again under other Node.js majors: bash scripts/test-node.sh 22 24 26
#
# Each Node is the official Linux binary as the npm registry ships it (the node-linux-<arch>
# package that the `node` package installs), unpacked once into .cache/node/<major>/. The tests
# run with that node first on PATH, so tap and every process a test starts with process.execPath
# use it. Left out: the type-check (the same sources) and test/bench, which checks the bench
# harness, not the product. A Node that cannot be fetched is skipped with the reason, and fails
# under CI=true, like a missing peer.
set -uo pipefail
cd "$(dirname "$0")/.."

arch=$(node -p process.arch)
mapfile -t files < <(find test examples -name '*.test.ts' -not -path 'test/bench/*' | sort)
rc=0
for major in "$@"; do
  dir=.cache/node/$major
  bin=$dir/package/bin
  if [ ! -x "$bin/node" ]; then
    # Unpacked beside it, then renamed: an interrupted download never leaves a half binary.
    tmp=$dir.part
    rm -rf "$tmp" && mkdir -p "$tmp"
    tgz=$(npm pack "node-linux-$arch@$major" --pack-destination "$tmp" --silent 2>/dev/null | tail -n 1)
    if [ -z "$tgz" ] || ! tar xzf "$tmp/$tgz" -C "$tmp" || [ ! -x "$tmp/package/bin/node" ]; then
      why="node-linux-$arch@$major could not be fetched from the npm registry"
      if [ "${CI:-}" = true ]; then echo "not ok - Node $major: $why"; rc=1; else echo "# SKIP Node $major: $why"; fi
      rm -rf "$tmp"
      continue
    fi
    rm -f "$tmp/$tgz"
    rm -rf "$dir" && mv "$tmp" "$dir"
  fi
  echo "# Node $("$bin/node" -v): ${#files[@]} test files"
  PATH="$PWD/$bin:$PATH" node_modules/.bin/tap "${files[@]}" || rc=1
done
exit "$rc"
