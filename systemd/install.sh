#!/bin/sh
# `make install`: the kiosk on a real box (Debian 12, Jetson Linux), or staged in DESTDIR.
#
#   sudo make install                      the box itself: venv, units, users, folders
#   make install DESTDIR=/tmp/pkg          a staged tree for a package (nothing is run)
#
# Variables (the Makefile passes them through; defaults in brackets):
#   DESTDIR        staging root [empty: this machine]
#   PREFIX         where the package's venv goes [/opt/kiosk] (venv: $PREFIX/venv)
#   SYSTEM_SITE    1: the venv sees the system's packages (Jetson: JetPack's torch and
#                  TensorRT) [0]
#   PIP_ARGS       extra pip arguments (e.g. --no-deps when JetPack supplies torch) []
#   INSTALL_PYTHON no: skip the venv (units, users and folders only) [yes]
#   PYTHON         the interpreter the venv is made from [python3]
#   UNITDIR        [/etc/systemd/system, or /usr/lib/systemd/system with DESTDIR]
#   BINDIR         where `kiosk` and `kioskd` are linked [/usr/bin]
#   LIBDIR         helper programs of the units [/usr/lib/kiosk]
#   SYSUSERSDIR    [/usr/lib/sysusers.d]   TMPFILESDIR  [/usr/lib/tmpfiles.d]
#   UDEVDIR        [/usr/lib/udev/rules.d] POLKITDIR    [/usr/share/polkit-1/rules.d]
#   CONFDIR        [/etc/kiosk]            DOCDIR       [/usr/share/doc/kiosk]
#
# Every unit, udev rule and helper program in systemd/ is installed by pattern, so a
# new one needs no change here: systemd/*.service|*.path|*.target|*.socket|*.timer,
# systemd/*.rules and systemd/udev/*.rules (udev), systemd/polkit/*.rules (polkit),
# executable files without a suffix (LIBDIR).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
DESTDIR=${DESTDIR:-}
PREFIX=${PREFIX:-/opt/kiosk}
SYSTEM_SITE=${SYSTEM_SITE:-0}
PIP_ARGS=${PIP_ARGS:-}
INSTALL_PYTHON=${INSTALL_PYTHON:-yes}
PYTHON=${PYTHON:-python3}
if [ -z "$DESTDIR" ]; then UNITDIR=${UNITDIR:-/etc/systemd/system}; fi
UNITDIR=${UNITDIR:-/usr/lib/systemd/system}
BINDIR=${BINDIR:-/usr/bin}
LIBDIR=${LIBDIR:-/usr/lib/kiosk}
SYSUSERSDIR=${SYSUSERSDIR:-/usr/lib/sysusers.d}
TMPFILESDIR=${TMPFILESDIR:-/usr/lib/tmpfiles.d}
UDEVDIR=${UDEVDIR:-/usr/lib/udev/rules.d}
POLKITDIR=${POLKITDIR:-/usr/share/polkit-1/rules.d}
CONFDIR=${CONFDIR:-/etc/kiosk}
DOCDIR=${DOCDIR:-/usr/share/doc/kiosk}
venv="$PREFIX/venv"

say() { echo "install: $*"; }

if [ -z "$DESTDIR" ] && [ "$(id -u)" != 0 ]; then
    echo "install: run it as root on the box (sudo make install), or stage it with" \
        "make install DESTDIR=/some/folder" >&2
    exit 2
fi

# 1. The package, in its own venv (non-editable: the box does not need this checkout).
if [ "$INSTALL_PYTHON" != no ]; then
    site=
    [ "$SYSTEM_SITE" = 1 ] && site=--system-site-packages
    say "venv $DESTDIR$venv ${site:+(with the system's packages)}"
    # shellcheck disable=SC2086
    "$PYTHON" -m venv $site "$DESTDIR$venv"
    # shellcheck disable=SC2086
    "$DESTDIR$venv/bin/python" -m pip install -q $PIP_ARGS "$repo"
    if [ -n "$DESTDIR" ]; then
        # Scripts name the interpreter by its staged path; the box runs it from $venv.
        for f in "$DESTDIR$venv"/bin/* "$DESTDIR$venv/pyvenv.cfg"; do
            if [ -f "$f" ] && [ ! -L "$f" ] && grep -Iq "$DESTDIR$venv" "$f"; then
                sed -i "s#$DESTDIR$venv#$venv#g" "$f"
            fi
        done
    fi
    install -d "$DESTDIR$BINDIR"
    ln -sfn "$venv/bin/kiosk" "$DESTDIR$BINDIR/kiosk"
    ln -sfn "$venv/bin/kioskd" "$DESTDIR$BINDIR/kioskd"
fi

# 2. Units (paths rewritten when BINDIR or LIBDIR differ from the defaults they name).
install -d "$DESTDIR$UNITDIR"
for unit in "$here"/*.service "$here"/*.path "$here"/*.target "$here"/*.socket \
    "$here"/*.timer; do
    [ -f "$unit" ] || continue
    install -m 0644 "$unit" "$DESTDIR$UNITDIR/"
    sed -i "s#/usr/bin/kiosk#$BINDIR/kiosk#g; s#/usr/lib/kiosk/#$LIBDIR/#g" \
        "$DESTDIR$UNITDIR/$(basename "$unit")"
    say "unit $UNITDIR/$(basename "$unit")"
done

# 3. Helper programs of the units.
install -d "$DESTDIR$LIBDIR"
for prog in "$here"/*; do
    case $(basename "$prog") in *.*) continue ;; esac
    [ -f "$prog" ] && [ -x "$prog" ] || continue
    install -m 0755 "$prog" "$DESTDIR$LIBDIR/"
    say "program $LIBDIR/$(basename "$prog")"
done

# 4. Users, folders, udev and polkit rules.
install -D -m 0644 "$here/sysusers.d/kiosk.conf" "$DESTDIR$SYSUSERSDIR/kiosk.conf"
install -D -m 0644 "$here/tmpfiles.d/kiosk.conf" "$DESTDIR$TMPFILESDIR/kiosk.conf"
for rule in "$here"/*.rules "$here"/udev/*.rules; do
    [ -f "$rule" ] || continue
    install -D -m 0644 "$rule" "$DESTDIR$UDEVDIR/$(basename "$rule")"
    say "udev rule $UDEVDIR/$(basename "$rule")"
done
for rule in "$here"/polkit/*.rules; do
    [ -f "$rule" ] || continue
    install -D -m 0644 "$rule" "$DESTDIR$POLKITDIR/$(basename "$rule")"
done
install -D -m 0644 "$here/README.md" "$DESTDIR$DOCDIR/systemd-README.md"

# 5. The configuration: the example, only where none is (a technician's file stays).
install -d -m 0755 "$DESTDIR$CONFDIR" "$DESTDIR$CONFDIR/trusted-keys"
if [ -e "$DESTDIR$CONFDIR/kiosk.toml" ]; then
    say "kept $CONFDIR/kiosk.toml (the example is in $DOCDIR/kiosk.example.toml)"
else
    install -m 0644 "$repo/appliance/kiosk.example.toml" "$DESTDIR$CONFDIR/kiosk.toml"
    say "config $CONFDIR/kiosk.toml (from appliance/kiosk.example.toml)"
fi
install -D -m 0644 "$repo/appliance/kiosk.example.toml" "$DESTDIR$DOCDIR/kiosk.example.toml"

# 6. On the box itself: the users and folders now (a package does this in postinst).
if [ -z "$DESTDIR" ]; then
    systemd-sysusers "$SYSUSERSDIR/kiosk.conf"
    systemd-tmpfiles --create "$TMPFILESDIR/kiosk.conf"
    command -v udevadm >/dev/null && udevadm control --reload || true
    cat <<EOF
install: done. Next:
  1. copy the museum's public key:  cp museum.pub $CONFDIR/trusted-keys/
  2. check the config:              kiosk config check $CONFDIR/kiosk.toml
  3. load and start the units:      systemctl daemon-reload
                                    systemctl enable --now kiosk.target kioskd.service \\
                                        kiosk-browser.service kiosk-inbox.path
  4. watch it come up:              journalctl -fu kioskd
EOF
else
    say "staged in $DESTDIR (run systemd-sysusers, systemd-tmpfiles --create and" \
        "systemctl daemon-reload on the box after unpacking)"
fi
