#!/usr/bin/env bash
# The project's two entry points on a fresh machine:
#   ./dev.sh demo   -> create/refresh .venv, then run `sdlora demo` (the main job on the bundled sd-tiny)
#   ./dev.sh test   -> create/refresh .venv (with the test extra: everything the suite needs), then run
#                      the test suite; this is what CI runs (.ci/run)
# Extra arguments are passed on (e.g. ./dev.sh test -k lora, ./dev.sh demo --output out/demo).
set -euo pipefail
cd "$(dirname "$0")"
VENV=${SDLORA_VENV:-.venv}
PY="$VENV/bin/python"

ensure_env() {
  local extras=$1
  [ -x "$PY" ] || python3 -m venv "$VENV"
  # torch first: on a machine with a CUDA torch already in the venv nothing changes; on a fresh
  # CPU machine `torch==2.13.0` takes the local CPU wheel instead of a multi-GB CUDA build.
  if ! "$PY" -c "import torch" 2>/dev/null; then
    "$PY" -m pip install -q --upgrade pip
    "$PY" -m pip install -q "torch==2.13.0" || "$PY" -m pip install -q torch
  fi
  local stamp="$VENV/.sdlora-installed-$extras"
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    "$PY" -m pip install -q -e ".[$extras]"
    touch "$stamp"
  fi
}

ensure_browser() {
  # The web UI's browser test drives Debian's chromium with Playwright (`playwright install` cannot
  # download its own browser here); install it when missing and we may. Only the tests need it.
  if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && apt-get install -y -qq chromium >/dev/null
  fi
}

cmd=${1:-}; shift || true
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 TOKENIZERS_PARALLELISM=false
case "$cmd" in
  demo) ensure_env test; exec "$VENV/bin/sdlora" demo "$@" ;;
  # the suite over every core (xdist; tests that share a fixture stay on one worker: tests/conftest.py)
  test) ensure_env test; ensure_browser
        exec "$PY" -m pytest -q -n "${SDLORA_TEST_WORKERS:-auto}" --dist loadgroup --no-loadscope-reorder "$@" ;;
  *) echo "usage: ./dev.sh demo|test [args...]" >&2; exit 2 ;;
esac
