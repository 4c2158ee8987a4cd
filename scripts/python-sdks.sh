#!/usr/bin/env bash
# Installs the official OpenAI and Anthropic Python SDKs into a throwaway virtualenv under
# target/ (once; the versions are pinned), for the tests that point them at `tollgate serve`.
# Prints the virtualenv's python.
set -euo pipefail
cd "$(dirname "$0")/.."
OPENAI=3.57.0
ANTHROPIC=2.14.0
venv="target/python-sdks"
stamp="$venv/installed-openai-$OPENAI-anthropic-$ANTHROPIC"
if [ ! -e "$stamp" ]; then
    rm -rf "$venv"
    python3 -m venv "$venv" >&2
    "$venv/bin/python" -m pip install -q --disable-pip-version-check \
        "openai==$OPENAI" "anthropic==$ANTHROPIC" >&2
    touch "$stamp"
fi
echo "$PWD/$venv/bin/python"
