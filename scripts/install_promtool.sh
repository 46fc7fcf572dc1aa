#!/usr/bin/env bash
# Install Debian's `prometheus` package (prometheus + promtool) into .tools/prometheus/
# without installing it system-wide or starting its service: `apt-get download` the .deb
# into a cache dir and `dpkg-deb -x` it. Idempotent: does nothing when promtool is there.
# Prints the directory holding the `promtool` and `prometheus` binaries on stdout.
#
# Usage: bash scripts/install_promtool.sh        (run from anywhere)
# Env:   CORRAL_TOOLS_DIR   (default <repo>/.tools)
#        CORRAL_APT_CACHE   (default <tools>/cache)
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
tools="${CORRAL_TOOLS_DIR:-$repo/.tools}"
dest="$tools/prometheus"
cache="${CORRAL_APT_CACHE:-$tools/cache}"
bin="$dest/usr/bin"

if [[ -x "$bin/promtool" && -x "$bin/prometheus" ]]; then
    echo "$bin"
    exit 0
fi

command -v apt-get >/dev/null || { echo "install_promtool: apt-get not found (Debian/Ubuntu only)" >&2; exit 1; }
command -v dpkg-deb >/dev/null || { echo "install_promtool: dpkg-deb not found" >&2; exit 1; }

mkdir -p "$cache" "$dest"
# As root, apt hands the download to its sandbox user: let it write the cache.
if [[ $EUID -eq 0 ]] && id _apt >/dev/null 2>&1; then chown _apt "$cache" 2>/dev/null || true; fi

# Empty apt lists (fresh containers): fetch them once.
if ! compgen -G "/var/lib/apt/lists/*_Packages*" >/dev/null; then
    echo "install_promtool: apt lists are empty, running apt-get update" >&2
    apt-get update -qq >&2
fi

shopt -s nullglob
debs=("$cache"/prometheus_*.deb)
if (( ${#debs[@]} == 0 )); then
    # apt-get download writes into the current directory, as the invoking user.
    if ! (cd "$cache" && apt-get download -qq prometheus >&2); then
        echo "install_promtool: download failed; refreshing apt lists and retrying" >&2
        apt-get update -qq >&2
        (cd "$cache" && apt-get download -qq prometheus >&2)
    fi
    debs=("$cache"/prometheus_*.deb)
fi
(( ${#debs[@]} > 0 )) || { echo "install_promtool: no prometheus .deb in $cache" >&2; exit 1; }

dpkg-deb -x "${debs[-1]}" "$dest"
[[ -x "$bin/promtool" ]] || { echo "install_promtool: $bin/promtool missing after extraction" >&2; exit 1; }
echo "$bin"
