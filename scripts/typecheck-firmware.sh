#!/usr/bin/env bash
# Type-check the MicroPython firmware (device-firmware/micropython) with mypy against the
# MicroPython stubs from PyPI: micropython-esp32-stubs (machine, network, micropython, ...)
# and the micropython-stdlib-stubs it brings (asyncio, os, time, ... as MicroPython has them).
# Both are laid out as one typeshed that replaces CPython's, so `time.ticks_ms` checks and
# `time.monotonic` does not.
#
# Our modules are checked with --check-untyped-defs. coap.py, net.py, cbor.py and wire.py
# (another owner's) are checked at module level only, and two of their idioms are let through
# (the CPython fallbacks `def const(x)` / `ticks_ms` and `asyncio.core`): see the report in
# the firmware's history for what --check-untyped-defs still finds there.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-.venv/bin/python}
SITE=$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
if [ ! -f "$SITE/stdlib/VERSIONS" ] || ! ls "$SITE"/micropython_esp32_stubs-*.dist-info >/dev/null 2>&1; then
    echo "typecheck-firmware: MicroPython stubs missing: pip install micropython-esp32-stubs" >&2
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

[mypy-coap,net,cbor,wire]
check_untyped_defs = False
disable_error_code = misc, attr-defined, no-redef
INI
cd "$WORK/src"
"$ROOT/.venv/bin/mypy" --config-file "$WORK/mypy.ini" --custom-typeshed-dir "$WORK/typeshed" \
    --cache-dir "$WORK/cache" ./*.py
