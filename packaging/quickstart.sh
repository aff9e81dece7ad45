#!/usr/bin/env bash
# Install, create the default home if there is none, and mount the share.
# Usage: bash packaging/quickstart.sh [MOUNTPOINT]   (default: ~/syncd)
set -euo pipefail
cd "$(dirname "$0")/.."
bash packaging/bootstrap.sh
mountpoint="${1:-$HOME/syncd}"
syncd=.venv/bin/syncd
$syncd status >/dev/null 2>&1 || $syncd init
mkdir -p "$mountpoint"
$syncd mount "$mountpoint"
$syncd status
echo
echo "Work in $mountpoint. Unmount with: $PWD/$syncd umount"
