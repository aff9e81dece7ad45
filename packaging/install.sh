#!/bin/sh
# Installs the mount helper, the systemd user unit and the shell completions.
set -eu

usage() {
    cat >&2 <<USAGE
usage: install.sh [--syncd PATH]

Installs (as root):
  /sbin/mount.syncd                                     mount -t syncd helper
  /usr/local/lib/systemd/user/syncd@.service            systemd user unit
  /usr/local/share/bash-completion/completions/syncd    bash completion
  /usr/local/share/zsh/site-functions/_syncd            zsh completion

--syncd PATH  make mount.syncd run this syncd executable; needed when syncd is
              not in /usr/local/bin, /usr/bin or /bin, because mount(8) removes
              PATH from the environment of its helpers.
USAGE
    exit 2
}

syncd=
case $# in
    0) ;;
    2) [ "$1" = --syncd ] || usage; syncd=$2 ;;
    *) usage ;;
esac
case $syncd in
    ''|/*) ;;
    *) echo "install.sh: --syncd needs an absolute path" >&2; exit 2 ;;
esac
if [ -n "$syncd" ] && [ ! -x "$syncd" ]; then
    echo "install.sh: $syncd is not executable" >&2
    exit 2
fi

src=$(dirname "$0")
install -D -m 755 "$src/mount.syncd" /sbin/mount.syncd
if [ -n "$syncd" ]; then
    escaped=$(printf '%s\n' "$syncd" | sed 's/[\\|&]/\\&/g')
    sed -i "s|^SYNCD_BIN=\${SYNCD_BIN:-syncd}\$|SYNCD_BIN=\${SYNCD_BIN:-$escaped}|" /sbin/mount.syncd
    if ! grep -qxF "SYNCD_BIN=\${SYNCD_BIN:-$syncd}" /sbin/mount.syncd; then
        echo "install.sh: could not write the syncd path into /sbin/mount.syncd" >&2
        exit 1
    fi
fi
install -D -m 644 "$src/syncd@.service" /usr/local/lib/systemd/user/syncd@.service
install -D -m 644 "$src/completions/syncd.bash" /usr/local/share/bash-completion/completions/syncd
install -D -m 644 "$src/completions/_syncd" /usr/local/share/zsh/site-functions/_syncd
