#!/usr/bin/env bash
# Install everything fleetlet and its tests need on Debian 12 (bookworm), then create .venv.
#
# Idempotent: Debian packages are installed only when one is missing, and the venv is
# re-synced only when pyproject.toml / setup.py (or the repo location) changed.
#
# Environment knobs:
#   FLEETLET_APT_EXTRA="pkg ..."   extra Debian packages (e.g. qemu-system-arm for the qemu tier)
#   FLEETLET_SKIP_APT=1            do not touch Debian packages at all
#   FLEETLET_FORCE_PIP=1           re-run pip install even if nothing changed
set -euo pipefail

cd "$(dirname "$0")/.."
REPO="$(pwd)"

log() { printf '[install] %s\n' "$*" >&2; }
die() { printf '[install] ERROR: %s\n' "$*" >&2; exit 1; }

# --- privileges ------------------------------------------------------------------------
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo)
    else
        log "not root and no sudo: Debian packages cannot be installed (set FLEETLET_SKIP_APT=1 to silence)"
        FLEETLET_SKIP_APT="${FLEETLET_SKIP_APT:-1}"
    fi
fi

# --- Debian packages ---------------------------------------------------------------------
# What the tests run for real: PostgreSQL 15 (store backend), etcd 3.4 (reference store),
# libcoap's coap-client (CoAP peer), Docker Engine + registry (SBC agent), busybox-static
# (a tiny image imported with `docker import`), procps/iproute2 (process and netns helpers).
APT_PACKAGES=(
    ca-certificates
    openssl
    postgresql
    postgresql-client
    libcoap3-bin
    etcd-server
    docker.io
    docker-registry
    busybox-static
    procps
    iproute2
    psmisc
    # The emulated aarch64 board tier (tests/qemu): system emulator, qemu-user for debootstrap's
    # second stage, and the tools that build the board's root file system.
    qemu-system-arm
    qemu-user-static
    binfmt-support
    debootstrap
    cpio
)
# shellcheck disable=SC2206
APT_PACKAGES+=(${FLEETLET_APT_EXTRA:-})

pkg_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

apt_run() {
    # Wait for a concurrent apt/dpkg (another session, unattended upgrades) instead of failing.
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -q "$@"
}

install_debian_packages() {
    local missing=()
    local p
    for p in "$@"; do
        pkg_installed "$p" || missing+=("$p")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0

    log "installing Debian packages: ${missing[*]}"
    apt_run update >/tmp/fleetlet-apt-update.log 2>&1 || {
        cat /tmp/fleetlet-apt-update.log >&2
        die "apt-get update failed"
    }
    # etcd-client exists in bookworm (etcdctl); add it only if the archive knows it.
    if ! pkg_installed etcd-client && apt-cache show etcd-client >/dev/null 2>&1; then
        missing+=(etcd-client)
    fi

    # Debian's postinst scripts would start postgresql, etcd, docker and docker-registry as
    # system services. The tests start their own private instances on free loopback ports,
    # so forbid service starts during the install (policy-rc.d exit 101 = "action forbidden").
    local policy=/usr/sbin/policy-rc.d added_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$policy" >/dev/null
        "${SUDO[@]}" chmod 755 "$policy"
        added_policy=1
    fi
    local rc=0
    apt_run install -y --no-install-recommends "${missing[@]}" >/tmp/fleetlet-apt-install.log 2>&1 || rc=$?
    if [ "$added_policy" -eq 1 ]; then
        "${SUDO[@]}" rm -f "$policy"
    fi
    if [ "$rc" -ne 0 ]; then
        tail -n 60 /tmp/fleetlet-apt-install.log >&2
        die "apt-get install failed (full log: /tmp/fleetlet-apt-install.log)"
    fi
}

stop_system_services() {
    # Where a service manager did start them anyway (a real systemd host), stop and disable
    # them so that they never hold the default ports or data dirs the user might expect free.
    local svc
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
        for svc in etcd docker-registry; do
            "${SUDO[@]}" systemctl disable --now "$svc" >/dev/null 2>&1 || true
        done
    fi
}

PYTHON=""
find_python() {
    # Prefer an explicit choice, then the interpreter of an existing venv's base, then PATH
    # (a pyenv shim or Debian's python3). Must be CPython >= 3.11.
    local c
    for c in "${FLEETLET_PYTHON:-}" python3.11 python3 /usr/bin/python3 python3.12 python3.13; do
        [ -n "$c" ] || continue
        command -v "$c" >/dev/null 2>&1 || continue
        if "$c" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
            PYTHON="$(command -v "$c")"
            return 0
        fi
    done
    return 1
}

if [ "${FLEETLET_SKIP_APT:-0}" != "1" ]; then
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found: this script targets Debian 12"
    find_python || true
    # Debian's own python3 needs python3-venv for `-m venv` (ensurepip); a pyenv build has it.
    if [ -z "$PYTHON" ] || ! "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1; then
        APT_PACKAGES+=(python3 python3-venv)
    fi
    install_debian_packages "${APT_PACKAGES[@]}"
    stop_system_services
fi

find_python || die "no python3 >= 3.11 found (set FLEETLET_PYTHON=/path/to/python3.11)"

# --- virtualenv ------------------------------------------------------------------------
VENV="$REPO/.venv"
STAMP="$VENV/.fleetlet-install-stamp"
want_stamp="$(
    {
        echo "$REPO"
        cat pyproject.toml setup.py 2>/dev/null
    } | sha256sum | cut -d' ' -f1
)"

if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
    log "creating $VENV with $PYTHON ($("$PYTHON" --version 2>&1))"
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
    rm -f "$STAMP"
fi

have_stamp="$(cat "$STAMP" 2>/dev/null || true)"
if [ "$have_stamp" != "$want_stamp" ] || [ "${FLEETLET_FORCE_PIP:-0}" = "1" ]; then
    log "pip install -e '.[dev]' (log: /tmp/fleetlet-pip.log)"
    # A venv starts with its interpreter's old pip/setuptools and no wheel; the QEMU tier builds
    # fleetlet's wheel with --no-build-isolation, which needs setuptools' bdist_wheel here.
    if ! "$VENV/bin/python" -m pip install -q --upgrade pip 'setuptools>=68' wheel >/tmp/fleetlet-pip.log 2>&1 \
        || ! "$VENV/bin/python" -m pip install -q -e '.[dev]' >>/tmp/fleetlet-pip.log 2>&1; then
        tail -n 60 /tmp/fleetlet-pip.log >&2
        die "pip install failed"
    fi
    echo "$want_stamp" >"$STAMP"
fi

# The editable install maps role folders to absolute paths: check they point at this checkout.
"$VENV/bin/python" - "$REPO" <<'EOF' || die "the editable install does not point at this checkout; rerun with FLEETLET_FORCE_PIP=1"
import os, sys
import fleetlet.hardware as h
sys.exit(0 if os.path.realpath(os.path.dirname(h.__file__)) == os.path.realpath(os.path.join(sys.argv[1], "hardware")) else 1)
EOF

log "ok: $("$VENV/bin/python" --version 2>&1) in $VENV"
