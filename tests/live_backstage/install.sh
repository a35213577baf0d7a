#!/usr/bin/env bash
# Installs package.json's exact pins into $BS_LIVE_DIR (default /tmp/bs-live),
# the scratch folder tests/test_live_backstage.py loads Backstage from.
# Cached: a second run with the same package.json and Node does nothing.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
DIR="${BS_LIVE_DIR:-/tmp/bs-live}"
mkdir -p "$DIR"
# One install at a time (two suites may share the folder).
if command -v flock >/dev/null; then
  exec 9>"$DIR/.lock"
  flock -w 600 9
fi
stamp="$(sha256sum "$HERE/package.json" | cut -d' ' -f1) node-$(node --version)"
if [ -d "$DIR/node_modules" ] && [ "$(cat "$DIR/.installed" 2>/dev/null)" = "$stamp" ]; then
  echo "live-backstage: packages already installed in $DIR" >&2
  exit 0
fi
rm -f "$DIR/.installed"
cp "$HERE/package.json" "$DIR/package.json"
# better-sqlite3 is compiled against the local Node headers when they are
# there (no prebuilt binary and no header tarball is downloaded then).
if [ -f /usr/include/node/node.h ]; then
  export npm_config_nodedir=/usr
fi
check='new (require("better-sqlite3"))(":memory:").prepare("select 1").get()'
(cd "$DIR" && npm install --no-audit --no-fund --loglevel=error >&2)
if ! (cd "$DIR" && node -e "$check") 2>/dev/null; then
  (cd "$DIR" && npm rebuild better-sqlite3 >&2)
  (cd "$DIR" && node -e "$check")
fi
echo "$stamp" > "$DIR/.installed"
echo "live-backstage: installed into $DIR" >&2
