#!/usr/bin/env bash
# Installs LiteLLM's proxy (the version the gateway issue measured) into a throwaway virtualenv
# under target/ (once; about 750 MB), for `gateway-bench --litellm`, which runs it beside
# `tollgate serve` at the same loads. Prints the path of its `litellm` command.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="$(scripts/python-venv.sh target/litellm "litellm[proxy]==1.108.7")"
echo "$venv/bin/litellm"
