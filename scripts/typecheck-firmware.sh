#!/usr/bin/env bash
# Type-check the MicroPython firmware (device-firmware/micropython) with mypy against the
# MicroPython stubs from PyPI: micropython-esp32-stubs (machine, network, micropython, ...)
# and the micropython-stdlib-stubs it brings (asyncio, os, time, ... as MicroPython has them).
# Both are laid out as one typeshed that replaces CPython's, so `time.ticks_ms` checks and
# `time.monotonic` does not.
#
# The stubs install top-level time.pyi, socket.pyi, ... so they are kept out of the project's
# venv: installed once into .cache/mpy-stubs (pip --target), pinned to STUBS_VERSION.
# Every module is checked with --check-untyped-defs.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-.venv/bin/python}
STUBS_VERSION=1.29.0.post1
SITE=$ROOT/.cache/mpy-stubs
if ! ls "$SITE"/micropython_esp32_stubs-"$STUBS_VERSION".dist-info >/dev/null 2>&1; then
    rm -rf "$SITE"
    "$PY" -m pip install --quiet --disable-pip-version-check --target "$SITE" \
        "micropython-esp32-stubs==$STUBS_VERSION"
fi
if [ ! -f "$SITE/stdlib/VERSIONS" ]; then
    echo "typecheck-firmware: $SITE has no stdlib/VERSIONS (micropython-stdlib-stubs)" >&2
    exit 1
fi
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
TS="$WORK/typeshed/stdlib"
mkdir -p "$TS" "$WORK/src"
cp "$SITE/stdlib/VERSIONS" "$TS/VERSIONS"
for f in "$SITE"/stdlib/*; do
    [ "$(basename "$f")" = VERSIONS ] || ln -s "$f" "$TS/"
done
mkdir -p "$WORK/typeshed/stubs" && ln -s "$SITE/stubs/mypy-extensions" "$WORK/typeshed/stubs/"
# board modules of micropython-esp32-stubs, and the stdlib stubs' shared helpers (_mpy_shed)
names=$(cut -d, -f1 "$SITE"/micropython_esp32_stubs-*.dist-info/RECORD | grep -v -e '\.dist-info/' -e '^\.\.' \
    | grep -e '\.pyi$' -e '/' | cut -d/ -f1 | sort -u)
for name in $names _mpy_shed; do
    mod=${name%.pyi}
    [ -e "$TS/$name" ] && continue
    ln -s "$SITE/$name" "$TS/$name"
    grep -q "^$mod:" "$TS/VERSIONS" || echo "$mod: 3.0-" >>"$TS/VERSIONS"
done
# the firmware is flat modules, not a package: check copies without __init__.py
for f in device-firmware/micropython/*.py; do
    [ "$(basename "$f")" = "__init__.py" ] || cp "$f" "$WORK/src/"
done
cat >"$WORK/mypy.ini" <<'INI'
[mypy]
python_version = 3.11
check_untyped_defs = True
warn_unused_ignores = False
no_site_packages = True
INI
cd "$WORK/src"
"$ROOT/.venv/bin/mypy" --config-file "$WORK/mypy.ini" --custom-typeshed-dir "$WORK/typeshed" \
    --cache-dir "$WORK/cache" ./*.py
