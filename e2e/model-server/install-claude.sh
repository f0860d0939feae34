#!/usr/bin/env bash
# Installs the Claude Code CLI at a pinned version into a cache outside the
# repository, keyed by version, and prints the path of its `claude`
# executable on stdout (npm's chatter goes to stderr). Safe to run again: an
# installed version that answers `--version` is reused without any network.
#
#   HERMES_CLAUDE_VERSION  the version to install (default: the pin in
#                          CLAUDE_CODE_VERSION beside this script, which the
#                          tests read too)
#   HERMES_CACHE           the cache root (default /var/cache/hermes)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
version=${HERMES_CLAUDE_VERSION:-$(cat "$here/CLAUDE_CODE_VERSION")}
cache=${HERMES_CACHE:-/var/cache/hermes}
dir="$cache/claude-code-$version"
bin="$dir/node_modules/.bin/claude"

installed() {
  [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -q "^$version"
}

if installed; then
  echo "$bin"
  exit 0
fi

command -v npm >/dev/null || {
  echo "install-claude: npm is required to install the Claude Code CLI (Node >= 18)" >&2
  exit 1
}

mkdir -p "$cache"
# Install beside the final folder, then rename, so an interrupted install
# never leaves a half-filled cache entry that looks complete.
tmp=$(mktemp -d "$cache/.claude-code-$version.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
echo "install-claude: npm install @anthropic-ai/claude-code@$version into $dir" >&2
start=$(date +%s)
npm install --prefix "$tmp" --no-audit --no-fund --no-update-notifier \
  --loglevel=error "@anthropic-ai/claude-code@$version" >&2
rm -rf "$dir"
mv "$tmp" "$dir"
trap - EXIT
installed || {
  echo "install-claude: $bin does not report version $version" >&2
  exit 1
}
echo "install-claude: installed in $(($(date +%s) - start))s" >&2
echo "$bin"
