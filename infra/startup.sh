#!/usr/bin/env bash
# VM startup script (metadata key startup-script; runs as root at every boot, and again on demand
# with `sudo google_metadata_script_runner startup`). Self-contained: nothing else from infra/ is
# on the VM. It installs the streamer from the wheel named by the metadata key wheel-url:
#   0. read and check the metadata (streamer-env, streamer-service) before touching anything,
#   1. python3-venv (Debian 12 ships python3.11),
#   2. the system user klines (no login, no home),
#   3. the wheel into /opt/klines/venv, after checking its sha256 against the metadata key
#      wheel-sha256 (a mismatch refuses it, nothing installed), with the streamer's extra only and
#      every dependency pinned by the metadata key constraints (constraints.txt); the same version
#      is force-reinstalled, so a rebuilt wheel always lands; /opt/klines/installed-wheel.sha256
#      records what is installed (deploy_vm.sh's preflight waits for it),
#   4. /etc/klines/streamer.env from the metadata key streamer-env,
#   5. /etc/systemd/system/streamer.service from the metadata key streamer-service,
#   6. the Ops Agent (journald -> Cloud Logging, JSON parsed) with metadata key ops-agent-config,
#   7. systemctl daemon-reload, enable, restart.
#
# Testable without a VM: ROOT=/tmp/x installs under that root and skips apt, useradd, chown and
# systemctl; WHEEL=/path/to.whl skips the download; METADATA_DIR=DIR reads metadata key K from
# DIR/K instead of the metadata server; SKIP_SYSTEMCTL=1; PYTHON=python3.11;
# PIP_INSTALL_DEPS=0 installs the wheel without its dependencies (offline tests);
# SKIP_OPS_AGENT=1 (implied when ROOT is not /) leaves the Ops Agent alone.
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
want_sha=$(meta wheel-sha256)
[[ $want_sha =~ ^[0-9a-f]{64}$ ]] || die "metadata wheel-sha256 must be 64 hex digits, got '$want_sha'"
meta constraints >"$WORK/constraints.txt"
grep -q '==' "$WORK/constraints.txt" || die "metadata constraints holds no pinned version"

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
have_sha=$(sha256sum "$wheel" | cut -d' ' -f1)
[[ $have_sha == "$want_sha" ]] ||
  die "wheel $wheel has sha256 $have_sha, metadata wheel-sha256 says $want_sha: refusing to install it"
printf 'startup.sh: wheel %s (sha256 %s, as the metadata says)\n' "$wheel" "$have_sha"

step "venv $VENV"
mkdir -p "$(dirname "$VENV")"
if [[ ! -x $VENV/bin/python ]]; then
  "$PYTHON" -m venv "$VENV"
fi
pip=("$VENV/bin/python" -m pip install --no-input --disable-pip-version-check -q)
# Same version number, new build: force the package itself, leave dependencies alone ...
"${pip[@]}" --force-reinstall --no-deps "$wheel"
# ... then the streamer's dependencies only (the [streamer] extra), pinned to constraints.txt.
if [[ $PIP_INSTALL_DEPS == 1 ]]; then
  "${pip[@]}" -c "$WORK/constraints.txt" "${wheel}[streamer]"
fi
printf '%s\n' "$have_sha" >"$WORK/installed-wheel.sha256"
install_file "$WORK/installed-wheel.sha256" "$P/opt/klines/installed-wheel.sha256" 0644

step "configuration $ETC/streamer.env"
mkdir -p "$ETC"
install_file "$WORK/streamer.env" "$ETC/streamer.env" 0640
if on_vm; then
  chown "root:$SERVICE_USER" "$ETC/streamer.env"
fi

step "systemd unit $UNIT_DIR/$UNIT_NAME"
mkdir -p "$UNIT_DIR"
install_file "$WORK/$UNIT_NAME" "$UNIT_DIR/$UNIT_NAME" 0644

step "ops agent"
if on_vm && [[ ${SKIP_OPS_AGENT:-0} != 1 ]]; then
  # Google's installer adds its apt repository and installs google-cloud-ops-agent; re-runs keep
  # the installed version. Our pipeline: journald entries of streamer.service, JSON parsed.
  if ! dpkg -s google-cloud-ops-agent >/dev/null 2>&1; then
    curl -fsS --retry 5 -o "$WORK/add-google-cloud-ops-agent-repo.sh" \
      https://dl.google.com/cloudagents/add-google-cloud-ops-agent-repo.sh
    bash "$WORK/add-google-cloud-ops-agent-repo.sh" --also-install
  fi
  mkdir -p /etc/google-cloud-ops-agent
  meta ops-agent-config >"$WORK/ops-agent.yaml"
  install_file "$WORK/ops-agent.yaml" /etc/google-cloud-ops-agent/config.yaml 0644
  systemctl restart google-cloud-ops-agent
else
  printf 'startup.sh: ops agent skipped (ROOT=%s, SKIP_OPS_AGENT=%s)\n' "$ROOT" "${SKIP_OPS_AGENT:-0}"
fi

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
