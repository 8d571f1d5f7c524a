# Sourced by the scripts: make sure .venv exists and holds the project (with every extra)
# and the development tools. Reinstalls only when pyproject.toml or a requirements file
# changed since the last install.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
extras="${SAGAKIT_EXTRAS:-all}"
stamp=".venv/.sagakit-installed-$extras"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ requirements-dev.txt -nt "$stamp" ] \
  || [ requirements-core-tests.txt -nt "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e ".[$extras]" -r requirements-dev.txt
  touch "$stamp"
fi
export PATH="$root/.venv/bin:$PATH"
