#!/usr/bin/env bash
# Install what syncd needs on Debian 12: the FUSE packages (as root, with apt-get) and a
# virtual environment at .venv with syncd and its test tools. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

# apache2-bin: the WebDAV server of the relay tests (tests/relay/webdav_server.py); the
# binary and modules only, no service started. iproute2: `ip netns`, for discovery's test
# between two network namespaces (tests/peers/test_discovery.py).
packages=(fuse3 libfuse3-dev pkg-config python3-venv rsync git apache2-bin iproute2)
# The status page's test drives a headless browser (tests/peers/test_ui.py): installed
# without their recommended packages (a desktop's worth), they take a fraction of the time.
browser=(chromium chromium-driver)
missing() {
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || echo "$p"
    done
}
mapfile -t base < <(missing "${packages[@]}")
mapfile -t web < <(missing "${browser[@]}")
if [ ${#base[@]} -gt 0 ] || [ ${#web[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "bootstrap: need root to install: ${base[*]} ${web[*]} (run: sudo apt-get install ${base[*]} ${web[*]})" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    [ ${#base[@]} -eq 0 ] || apt-get install -y -qq "${base[@]}" >/dev/null
    [ ${#web[@]} -eq 0 ] || apt-get install -y -qq --no-install-recommends "${web[@]}" >/dev/null
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip >/dev/null
.venv/bin/pip install -q -e '.[test]'
echo "bootstrap: ready ($(.venv/bin/syncd --help >/dev/null && echo syncd installed in .venv/bin))"
