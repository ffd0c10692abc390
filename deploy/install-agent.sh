#!/bin/sh
# Install, upgrade or remove the kilowatch agent on a gateway (Raspberry Pi OS bookworm / Debian 12).
#
#   sudo deploy/install-agent.sh [--config FILE]       install from this checkout (needs PyPI)
#   sudo ./install-agent.sh [--config FILE]            from an unpacked bundle of `make wheelhouse`: offline
#   sudo ./install-agent.sh --wheelhouse DIR           offline from the wheels in DIR
#   sudo deploy/install-agent.sh --uninstall [--purge] remove it; --purge also deletes config, spool and user
#
# What it does: the system user `kilowatch` (in group dialout, for the serial ports), a venv in
# /opt/kilowatch/venv with `kilowatch[agent]`, /usr/local/bin/kilowatch, /etc/kilowatch/agent.yaml
# (0640 root:kilowatch; from --config, or the sample to edit; NEVER overwritten: an upgrade keeps it), the
# spool folder /var/lib/kilowatch (0750, the unit's StateDirectory), the certificates and keys already in
# /etc/kilowatch (*.pem, *.key) made 0640 root:kilowatch, and the unit kilowatch-agent.service,
# enabled (and restarted on an upgrade; started at once when --config was given). Running it again upgrades.
#
# For packaging and tests: every path is under $DESTDIR (default: /), and the commands that change the
# system go through variables (USERADD, USERMOD, USERDEL, GETENT, CHOWN, SYSTEMCTL; PYTHON for the venv).
set -eu

DESTDIR=${DESTDIR:-}
PYTHON=${PYTHON:-python3}
USERADD=${USERADD:-useradd}
USERMOD=${USERMOD:-usermod}
USERDEL=${USERDEL:-userdel}
GETENT=${GETENT:-getent}
CHOWN=${CHOWN:-chown}
SYSTEMCTL=${SYSTEMCTL:-systemctl}

HERE=$(cd "$(dirname "$0")" && pwd)
USER_NAME=kilowatch
UNIT=kilowatch-agent.service
PREFIX=$DESTDIR/opt/kilowatch
VENV=$PREFIX/venv
CONFIG_DIR=$DESTDIR/etc/kilowatch
CONFIG=$CONFIG_DIR/agent.yaml
STATE=$DESTDIR/var/lib/kilowatch
UNIT_PATH=$DESTDIR/etc/systemd/system/$UNIT
LINK=$DESTDIR/usr/local/bin/kilowatch

usage() {
    sed -n '2,8s/^# \{0,1\}//p' "$0"
    exit 2
}

say() { printf 'install-agent: %s\n' "$*"; }

action=install
purge=false
config_from=
wheelhouse=
while [ $# -gt 0 ]; do
    case $1 in
        --config) [ $# -ge 2 ] || usage; config_from=$2; shift ;;
        --wheelhouse) [ $# -ge 2 ] || usage; wheelhouse=$2; shift ;;
        --uninstall) action=uninstall ;;
        --purge) purge=true ;;
        -h|--help) usage ;;
        *) say "unknown option $1"; usage ;;
    esac
    shift
done
if $purge && [ $action != uninstall ]; then
    say "--purge goes with --uninstall"
    exit 2
fi

# In a bundle the wheels lie beside this script: offline by default.
if [ -z "$wheelhouse" ] && ls "$HERE"/kilowatch-*.whl >/dev/null 2>&1; then
    wheelhouse=$HERE
fi
# Beside the script in a bundle; under deploy/ in a checkout, which is also where pip installs from.
EXAMPLE=$HERE/agent.example.yaml
UNIT_SOURCE=$HERE/systemd/$UNIT
SOURCE=$(dirname "$HERE")

uninstall() {
    "$SYSTEMCTL" disable --now "$UNIT" || true
    rm -f "$UNIT_PATH" "$LINK"
    "$SYSTEMCTL" daemon-reload
    rm -rf "$PREFIX"
    if $purge; then
        rm -rf "$CONFIG_DIR" "$STATE"
        if "$GETENT" passwd "$USER_NAME" >/dev/null; then "$USERDEL" "$USER_NAME"; fi
        say "removed the agent, its config, its spool and the user $USER_NAME"
    else
        say "removed the agent; kept $CONFIG_DIR and the spool in $STATE (--purge deletes them)"
    fi
}

create_user() {
    if "$GETENT" passwd "$USER_NAME" >/dev/null; then
        "$USERMOD" --append --groups dialout "$USER_NAME"
    else
        "$USERADD" --system --user-group --groups dialout --home-dir /var/lib/kilowatch --no-create-home \
            --shell /usr/sbin/nologin --comment "kilowatch agent" "$USER_NAME"
    fi
}

install_venv() {
    if ! "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then
        say "$PYTHON cannot create a venv: sudo apt-get install python3-venv"
        exit 1
    fi
    [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
    if [ -n "$wheelhouse" ]; then
        "$VENV/bin/python" -m pip install --quiet --no-index --find-links "$wheelhouse" --upgrade \
            "kilowatch[agent]"
    else
        "$VENV/bin/python" -m pip install --quiet --upgrade "$SOURCE[agent]"
    fi
    mkdir -p "$(dirname "$LINK")"
    ln -sf /opt/kilowatch/venv/bin/kilowatch "$LINK"
}

# Returns 0 when it wrote a new config, 1 when it kept the one there.
install_config() {
    install -d -m 0750 "$CONFIG_DIR"
    "$CHOWN" root:"$USER_NAME" "$CONFIG_DIR"
    # Certificates and keys put there beforehand (ca.pem, client.pem, client.key): for the service only.
    for file in "$CONFIG_DIR"/*.pem "$CONFIG_DIR"/*.key; do
        [ -e "$file" ] || continue
        chmod 0640 "$file"
        "$CHOWN" root:"$USER_NAME" "$file"
    done
    if [ -e "$CONFIG" ]; then
        say "kept $CONFIG"
        return 1
    fi
    if [ -n "$config_from" ]; then
        install -m 0640 "$config_from" "$CONFIG"
    else
        # The sample with the spool in the state folder (ProtectSystem=strict makes /etc read-only).
        (umask 027 && { cat "$EXAMPLE"; printf '\nspool:\n  path: /var/lib/kilowatch/spool.db\n'; } >"$CONFIG")
    fi
    "$CHOWN" root:"$USER_NAME" "$CONFIG"
    return 0
}

install_unit() {
    install -d -m 0755 "$(dirname "$UNIT_PATH")"
    install -m 0644 "$UNIT_SOURCE" "$UNIT_PATH"
    "$SYSTEMCTL" daemon-reload
    "$SYSTEMCTL" enable "$UNIT"
}

if [ $action = uninstall ]; then
    uninstall
    exit 0
fi

create_user
install_venv
install -d -m 0750 "$STATE"
"$CHOWN" "$USER_NAME":"$USER_NAME" "$STATE"
if install_config; then new_config=true; else new_config=false; fi
install_unit
if ! $new_config || [ -n "$config_from" ]; then
    "$SYSTEMCTL" restart "$UNIT"
    say "installed and (re)started $UNIT; check it with: sudo -u $USER_NAME kilowatch agent doctor --config /etc/kilowatch/agent.yaml"
else
    say "installed; edit /etc/kilowatch/agent.yaml (site, gateway, broker, buses), check it with"
    say "  sudo -u $USER_NAME kilowatch agent doctor --config /etc/kilowatch/agent.yaml"
    say "then: sudo systemctl start $UNIT"
fi
