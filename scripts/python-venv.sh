#!/usr/bin/env bash
# Makes a throwaway virtualenv at DIR under target/ with exactly PACKAGES (pinned requirement
# specifiers), once: it is made again only when the list changes. Prints DIR's absolute path.
#
#   scripts/python-venv.sh DIR PACKAGE==VERSION...
set -euo pipefail
cd "$(dirname "$0")/.."
venv="$1"
shift
if [ "$(cat "$venv/installed" 2>/dev/null)" != "$*" ]; then
    rm -rf "$venv"
    python3 -m venv "$venv" >&2
    "$venv/bin/python" -m pip install -q --disable-pip-version-check "$@" >&2
    echo "$*" > "$venv/installed"
fi
echo "$PWD/$venv"
