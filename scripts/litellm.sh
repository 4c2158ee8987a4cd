#!/usr/bin/env bash
# Installs LiteLLM's proxy (the version the gateway issue measured) into a throwaway virtualenv
# under target/ (once; about 750 MB), for `gateway-bench --litellm`, which runs it beside
# `tollgate serve` at the same loads. Prints the path of its `litellm` command.
set -euo pipefail
cd "$(dirname "$0")/.."
LITELLM=1.108.7
venv="target/litellm"
stamp="$venv/installed-litellm-$LITELLM"
if [ ! -e "$stamp" ]; then
    rm -rf "$venv"
    python3 -m venv "$venv" >&2
    "$venv/bin/python" -m pip install -q --disable-pip-version-check "litellm[proxy]==$LITELLM" >&2
    touch "$stamp"
fi
echo "$PWD/$venv/bin/litellm"
