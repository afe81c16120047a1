#!/usr/bin/env bash
# Label Studio 1.23 in its own venv (.venv-ls; it pins Django, pandas and numpy versions that must not mix
# with .venv), for tests/app/test_label_studio.py. ~1 GB, a few minutes the first time.
# Idempotent: returns at once when .venv-ls already has label-studio 1.23.x.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${INSTASEG_LS_VENV:-.venv-ls}"
PYTHON="${PYTHON:-python3}"
if "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(not (m.version('label-studio').startswith('1.23.') and int(m.version('sentry-sdk').split('.')[0]) < 3))" 2>/dev/null; then
    echo "label-studio: $("$VENV/bin/python" -c "import importlib.metadata as m; print(m.version('label-studio'))") in $VENV"
    exit 0
fi
test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
# sentry-sdk 3 removed options Label Studio 1.23 passes at start-up ("Unknown option 'send_default_pii'"):
# label-studio asks for sentry-sdk>=2.16 only, so a fresh install took 3.0 and the server did not start.
"$VENV/bin/python" -m pip install --quiet 'label-studio==1.23.*' 'sentry-sdk>=2.16,<3'
echo "label-studio: $("$VENV/bin/python" -c "import importlib.metadata as m; print(m.version('label-studio'))") in $VENV"
