#!/usr/bin/env bash
# Install, then show syncd working on one machine: two homes, alpha and beta, joined as
# peers on 127.0.0.1 and both mounted. Run it again to remount; `down` takes it all down.
# Usage: bash packaging/quickstart.sh [down]
#   SYNCD_DEMO   where the homes and mount points go (default ~/syncd-demo)
#   SYNCD_PORT   alpha's peer port; beta gets the next one (default 7701)
set -euo pipefail
cd "$(dirname "$0")/.."
demo="${SYNCD_DEMO:-$HOME/syncd-demo}"
port="${SYNCD_PORT:-7701}"
syncd="$PWD/.venv/bin/syncd"

if [ "${1:-}" = down ]; then
    for name in alpha beta; do
        "$syncd" --home "$demo/$name" umount || true
    done
    echo "Both unmounted. Remove everything with: rm -rf $demo"
    exit 0
fi

bash packaging/bootstrap.sh
if [ ! -e "$demo/alpha/index.db" ]; then
    "$syncd" --home "$demo/alpha" init --name alpha --listen "127.0.0.1:$port"
    "$syncd" --home "$demo/alpha" cluster-key |
        "$syncd" --home "$demo/beta" init --name beta --listen "127.0.0.1:$((port + 1))" \
            --cluster-key-file -
    "$syncd" --home "$demo/alpha" peer add beta "https://127.0.0.1:$((port + 1))"
    "$syncd" --home "$demo/beta" peer add alpha "https://127.0.0.1:$port"
fi
for name in alpha beta; do
    mkdir -p "$demo/$name-mnt"
    if ! grep -q " $demo/$name-mnt fuse.syncd " /proc/mounts; then
        "$syncd" --home "$demo/$name" mount "$demo/$name-mnt"
    fi
done
# A mount answers before its peer side runs: give the two a few seconds to meet.
for _ in $(seq 50); do
    "$syncd" --home "$demo/alpha" status --json | grep -q '"state": "online"' && break
    sleep 0.2
done
"$syncd" --home "$demo/alpha" status

cat <<EOF

Two peers are mounted:
  alpha  $demo/alpha-mnt
  beta   $demo/beta-mnt

Watch a file cross over:
  echo hello > $demo/alpha-mnt/hello.txt
  cat $demo/beta-mnt/hello.txt
  $syncd --home $demo/alpha status     # per peer: state, pending changes

Take it all down:
  SYNCD_DEMO=$demo bash packaging/quickstart.sh down
EOF
