#!/bin/sh
# Drop what the service never runs from a finished virtualenv: pip and setuptools (nothing is
# installed at run time) and the packages' own test suites. Keeps the final image small.
set -eu
venv=${1:-/opt/hailo-immich}
"$venv/bin/python3" -m pip uninstall --quiet --yes pip setuptools wheel 2>/dev/null || true
find "$venv/lib" -depth -type d \( -name tests -o -path '*/onnx/backend/test' \) -exec rm -rf {} +
