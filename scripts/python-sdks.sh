#!/usr/bin/env bash
# Installs the official OpenAI and Anthropic Python SDKs into a throwaway virtualenv under
# target/ (once; the versions are pinned), for the tests that point them at `tollgate serve`.
# Prints the virtualenv's python.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="$(scripts/python-venv.sh target/python-sdks "openai==3.57.0" "anthropic==2.14.0")"
echo "$venv/bin/python"
