#!/usr/bin/env bash
# VM startup script (metadata key startup-script; runs as root at every boot, and again on demand
# with `sudo google_metadata_script_runner startup`). Self-contained: nothing else from infra/ is
# on the VM. It installs the streamer from the wheel named by the metadata key wheel-url:
#   0. read and check the metadata (streamer-env, streamer-service) before touching anything,
#   1. python3-venv (Debian 12 ships python3.11),
#   2. the system user klines (no login, no home),
#   3. the wheel into /opt/klines/venv (the same version is force-reinstalled, so a rebuilt wheel
#      always lands),
#   4. /etc/klines/streamer.env from the metadata key streamer-env,
#   5. /etc/systemd/system/streamer.service from the metadata key streamer-service,
#   6. systemctl daemon-reload, enable, restart.
#
# Testable without a VM: ROOT=/tmp/x installs under that root and skips apt, useradd, chown and
# systemctl; WHEEL=/path/to.whl skips the download; METADATA_DIR=DIR reads metadata key K from
# DIR/K instead of the metadata server; SKIP_SYSTEMCTL=1; PYTHON=python3.11;
# PIP_INSTALL_DEPS=0 installs the wheel without its dependencies (offline tests).
set -Eeuo pipefail

ROOT="${ROOT:-/}"
PYTHON="${PYTHON:-python3}"
SKIP_SYSTEMCTL="${SKIP_SYSTEMCTL:-0}"
PIP_INSTALL_DEPS="${PIP_INSTALL_DEPS:-1}"
METADATA_URL="http://metadata.google.internal/computeMetadata/v1/instance/attributes"
SERVICE_USER=klines
UNIT_NAME=streamer.service

P="${ROOT%/}" # path prefix: "" on the VM
VENV="$P/opt/klines/venv"
ETC="$P/etc/klines"
UNIT_DIR="$P/etc/systemd/system"
CURRENT_STEP="start"

trap 'printf "startup.sh: ERROR: step \"%s\" failed (exit %s) at line %s: %s\n" "$CURRENT_STEP" "$?" "$LINENO" "$BASH_COMMAND" >&2' ERR

step() {
  CURRENT_STEP=$1
  printf 'startup.sh: ==> %s\n' "$1"
}
die() {
  printf 'startup.sh: ERROR: step "%s": %s\n' "$CURRENT_STEP" "$*" >&2
  exit 1
}
on_vm() { [[ $P == "" ]]; }

# meta KEY: one instance metadata attribute.
meta() {
  if [[ -n ${METADATA_DIR:-} ]]; then
    [[ -f $METADATA_DIR/$1 ]] || die "metadata key $1 not found in $METADATA_DIR"
    cat "$METADATA_DIR/$1"
  else
    curl -fsS --retry 5 --retry-connrefused -H 'Metadata-Flavor: Google' "$METADATA_URL/$1" ||
      die "metadata key $1 could not be read"
  fi
}

# install_file SRC DEST MODE: atomic replace (write beside, then rename).
install_file() {
  local src=$1 dest=$2 mode=$3
  install -m "$mode" "$src" "$dest.tmp"
  mv -f "$dest.tmp" "$dest"
}

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

step "metadata"
# Read and check everything first, so bad metadata leaves the installed version untouched.
meta streamer-env >"$WORK/streamer.env"
grep -q '^KLINES_TOPIC=projects/[^/]*/topics/[^/]*$' "$WORK/streamer.env" ||
  die "streamer-env has no valid KLINES_TOPIC=projects/P/topics/T line"
meta streamer-service >"$WORK/$UNIT_NAME"
grep -q '^ExecStart=/opt/klines/venv/bin/python -m streamer' "$WORK/$UNIT_NAME" ||
  die "streamer-service does not look like infra/streamer.service"

step "python venv support"
if ! "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then
  on_vm || die "$PYTHON lacks venv/ensurepip"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv
fi

step "service user $SERVICE_USER"
if on_vm; then
  if ! getent passwd "$SERVICE_USER" >/dev/null; then
    useradd --system --user-group --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin "$SERVICE_USER"
  fi
else
  printf 'startup.sh: ROOT=%s is not /: user creation skipped\n' "$ROOT"
fi

step "wheel"
if [[ -n ${WHEEL:-} ]]; then
  [[ -f $WHEEL ]] || die "WHEEL=$WHEEL does not exist"
  wheel=$WHEEL
else
  url=$(meta wheel-url)
  [[ $url == gs://*.whl ]] || die "metadata wheel-url must be gs://.../NAME.whl, got '$url'"
  gcloud storage cp "$url" "$WORK/"
  wheel="$WORK/${url##*/}"
fi
printf 'startup.sh: wheel %s\n' "$wheel"

step "venv $VENV"
mkdir -p "$(dirname "$VENV")"
if [[ ! -x $VENV/bin/python ]]; then
  "$PYTHON" -m venv "$VENV"
fi
pip=("$VENV/bin/python" -m pip install --no-input --disable-pip-version-check -q)
# Same version number, new build: force the package itself, leave dependencies alone ...
"${pip[@]}" --force-reinstall --no-deps "$wheel"
# ... then bring dependencies to what the wheel requires.
if [[ $PIP_INSTALL_DEPS == 1 ]]; then
  "${pip[@]}" "$wheel"
fi

step "configuration $ETC/streamer.env"
mkdir -p "$ETC"
install_file "$WORK/streamer.env" "$ETC/streamer.env" 0640
if on_vm; then
  chown "root:$SERVICE_USER" "$ETC/streamer.env"
fi

step "systemd unit $UNIT_DIR/$UNIT_NAME"
mkdir -p "$UNIT_DIR"
install_file "$WORK/$UNIT_NAME" "$UNIT_DIR/$UNIT_NAME" 0644

step "start"
if on_vm && [[ $SKIP_SYSTEMCTL != 1 ]]; then
  systemctl daemon-reload
  systemctl enable "$UNIT_NAME"
  # restart, not start: a new wheel must replace the running process.
  systemctl restart "$UNIT_NAME"
  systemctl --no-pager --lines=0 status "$UNIT_NAME" || true
else
  printf 'startup.sh: systemctl skipped (ROOT=%s, SKIP_SYSTEMCTL=%s)\n' "$ROOT" "$SKIP_SYSTEMCTL"
fi
printf 'startup.sh: done\n'
