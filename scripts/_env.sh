# Shared set-up for scripts/run and scripts/test: a virtual environment with exactly the versions in
# requirements.lock. Idempotent: re-installs only when pyproject.toml or the lock changed. Sourced.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SWARM_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "setting up $VENV ..." >&2
  "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.homeswarm-installed"
want="$(cat "$ROOT/pyproject.toml" "$ROOT/requirements.lock" | sha256sum | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "installing the locked dependencies into $VENV (first run takes a few minutes) ..." >&2
  pip=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
  # torch first and pinned: it takes the CPU wheel already on our machines (see DESIGN.md)
  "${pip[@]}" "torch==2.13.0" 2>&1 | { grep -v '^WARNING: Location' || true; } >&2
  "${pip[@]}" --no-deps -r "$ROOT/requirements.lock" 2>&1 | { grep -v '^WARNING: Location' || true; } >&2
  "${pip[@]}" --no-deps -e "$ROOT" 2>&1 | { grep -v '^WARNING: Location' || true; } >&2
  "$VENV/bin/python" -m pip check --disable-pip-version-check >&2 || { echo "the lock is inconsistent: run ./scripts/lock" >&2; exit 1; }
  "$VENV/bin/python" -P -c "import homeswarm.swarm, libp2p, torch, ray, pycrdt, sentence_transformers" \
    || { echo "install failed" >&2; exit 1; }
  echo "$want" > "$stamp"
fi
export PATH="$VENV/bin:$PATH"
# never put the working directory on sys.path: the repository's folders must not shadow installed
# packages of the same name (the import name of all of ours is `homeswarm`)
export PYTHONSAFEPATH=1
cd "$ROOT"
