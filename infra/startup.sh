#!/usr/bin/env bash
# VM startup script (metadata key startup-script; runs as root at every boot, and again on demand
# with `sudo google_metadata_script_runner startup`). Self-contained: nothing else from infra/ is
# on the VM. It installs the streamer from the wheel named by the metadata key wheel-url:
#   0. read and check the metadata (streamer-markets, streamer-env-MARKET for each, streamer-service)
#      before touching anything,
#   1. python3-venv (Debian 12 ships python3.11),
#   2. the system user klines (no login, no home),
#   3. the wheel into /opt/klines/venv, after checking its sha256 against the metadata key
#      wheel-sha256 (a mismatch refuses it, nothing installed), with the streamer's extra only and
#      every dependency pinned by the metadata key constraints (constraints.txt); the same version
#      is force-reinstalled, so a rebuilt wheel always lands,
#   3b. the compiled row path: klinelake/core/_rest_page.c from the wheel, compiled for the venv's
#      python (${CC:-cc}; on the VM gcc and python3-dev are installed when missing), rebuilt at
#      every run; without it a WARNING and the pure Python path (same rows, more CPU); then
#      /opt/klines/installed-wheel.sha256 records what is installed (deploy_vm.sh's preflight
#      waits for it),
#   4. /etc/klines/streamer-MARKET.env from the metadata key streamer-env-MARKET, for each market in
#      streamer-markets ("spot um cm"); the env files of markets no longer listed are removed,
#   5. /etc/systemd/system/streamer@.service (a template) from the metadata key streamer-service;
#      migration from the single unit of earlier deployments: streamer.service is stopped,
#      disabled and removed, /etc/klines/streamer.env removed, and its state in /var/lib/klines
#      moved to /var/lib/klines/spot (the state directory of streamer@spot), once,
#   6. the Ops Agent (journald -> Cloud Logging, JSON parsed) with metadata key ops-agent-config,
#   7. systemctl daemon-reload; enable and restart streamer@MARKET for each market; units of
#      markets no longer listed are stopped and disabled (their state directory is kept).
#
# Testable without a VM: ROOT=/tmp/x installs under that root and skips apt, useradd, chown and
# systemctl; WHEEL=/path/to.whl skips the download; METADATA_DIR=DIR reads metadata key K from
# DIR/K instead of the metadata server; SKIP_SYSTEMCTL=1; PYTHON=python3.11;
# PIP_INSTALL_DEPS=0 installs the wheel without its dependencies (offline tests); CC=COMMAND the C
# compiler of the row path (default cc);
# SKIP_OPS_AGENT=1 (implied when ROOT is not /) leaves the Ops Agent alone.
set -Eeuo pipefail

ROOT="${ROOT:-/}"
PYTHON="${PYTHON:-python3}"
SKIP_SYSTEMCTL="${SKIP_SYSTEMCTL:-0}"
PIP_INSTALL_DEPS="${PIP_INSTALL_DEPS:-1}"
METADATA_URL="http://metadata.google.internal/computeMetadata/v1/instance/attributes"
SERVICE_USER=klines
UNIT_NAME=streamer@.service
OLD_UNIT=streamer.service # the single unit before MARKETS (migrated in step "migration")

P="${ROOT%/}" # path prefix: "" on the VM
VENV="$P/opt/klines/venv"
ETC="$P/etc/klines"
UNIT_DIR="$P/etc/systemd/system"
STATE="$P/var/lib/klines"
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
markets_line=$(meta streamer-markets)
read -r -a markets <<<"$markets_line"
((${#markets[@]} > 0)) || die "metadata streamer-markets is empty (want e.g. 'spot um cm')"
for m in "${markets[@]}"; do
  [[ $m == spot || $m == um || $m == cm ]] ||
    die "metadata streamer-markets: unknown market '$m' (spot, um or cm)"
  meta "streamer-env-$m" >"$WORK/streamer-$m.env"
  grep -q '^KLINES_TOPIC=projects/[^/]*/topics/[^/]*$' "$WORK/streamer-$m.env" ||
    die "streamer-env-$m has no valid KLINES_TOPIC=projects/P/topics/T line"
  grep -qx "MARKET=$m" "$WORK/streamer-$m.env" || die "streamer-env-$m has no MARKET=$m line"
done
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
# The compiled row path of the installed wheel goes first (step "compiled row path" builds it again
# from the new wheel's C source): pip would leave it in place (it did not install it), and if this
# run stops before that step, the units start at boot with the new code and no compiled module,
# never with one built from an older wheel's source.
sysconfig_lines=$("$VENV/bin/python" -I -c 'import importlib.machinery as m, sysconfig as s
print(s.get_paths()["purelib"]); print(s.get_paths()["include"]); print(s.get_config_var("EXT_SUFFIX"))
print(" ".join(m.EXTENSION_SUFFIXES))')
{
  read -r site_packages
  read -r py_include
  read -r ext_suffix
  read -r -a import_suffixes
} <<<"$sysconfig_lines"
core="$site_packages/klinelake/core"
module="$core/_rest_page$ext_suffix"
# Every name the import system would load it under, and leftovers of an interrupted build.
for suffix in "${import_suffixes[@]}"; do rm -f "$core/_rest_page$suffix"; done
rm -f "$core"/_rest_page*.tmp
pip=("$VENV/bin/python" -m pip install --no-input --disable-pip-version-check -q)
# Same version number, new build: force the package itself, leave dependencies alone ...
"${pip[@]}" --force-reinstall --no-deps "$wheel"
# ... then the streamer's dependencies only (the [streamer] extra), pinned to constraints.txt.
if [[ $PIP_INSTALL_DEPS == 1 ]]; then
  "${pip[@]}" -c "$WORK/constraints.txt" "${wheel}[streamer]"
fi

step "compiled row path"
# The backfill's and the streamer's row path, klinelake/core/_rest_page.c (issue 15), compiled for
# this venv's Python into the installed package: the wheel is pure and carries the C source
# (deploy_vm.sh). Built again after every install of the wheel, never kept: pip leaves a module it
# did not install in place, and one built from an older wheel's source must never be loaded with
# a newer wheel's Python code. No compiler is a WARNING, not an error: the pure Python path gives
# the same rows at about twice the CPU per row, and the streamer must start either way. (The
# previous build was removed before the wheel was installed: step "venv".)
read -r -a cc <<<"${CC:-cc}"
((${#cc[@]} > 0)) || cc=(cc) # CC of blanks only
problem=""
if [[ ! -f $core/_rest_page.c ]]; then
  problem="the wheel carries no klinelake/core/_rest_page.c (built before it shipped it)"
else
  if on_vm && { ! command -v "${cc[0]}" >/dev/null || [[ ! -f $py_include/Python.h ]]; }; then
    # A failure here shows in the log and as the compiler's failure below.
    apt-get update -q || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q gcc libc6-dev python3-dev || true
  fi
  # Python's own -DNDEBUG -fwrapv, as setuptools builds it (setup.py, `make venv`).
  build=("${cc[@]}" -shared -fPIC -O2 -fwrapv -DNDEBUG "-I$py_include" -o "$module.tmp"
    "$core/_rest_page.c")
  cc_rc=0
  "${build[@]}" >"$WORK/cc.log" 2>&1 || cc_rc=$?
  if ((cc_rc == 0)); then
    mv -f "$module.tmp" "$module" # atomic: a process importing it sees no half-written file
  else
    rm -f "$module.tmp"
    problem="\`${build[*]}\` failed (exit $cc_rc)"
    [[ ! -s $WORK/cc.log ]] || problem+=": $(tail -n 5 "$WORK/cc.log" | paste -sd ' ')"
  fi
fi
if [[ -z $problem ]] && ! "$VENV/bin/python" -I -c 'import klinelake.core._rest_page' \
  2>"$WORK/load.err"; then
  problem="the built $module does not load: $(tail -n 1 "$WORK/load.err")"
  rm -f "$module"
fi
# What the services will run: klinelake.core.row's own answer (it needs the dependencies).
row_path="compiled"
[[ -f $module ]] || row_path="pure Python"
if [[ $PIP_INSTALL_DEPS == 1 ]]; then
  check='from klinelake.core.row import ROW_PATH; print(ROW_PATH)'
  if ! row_path=$("$VENV/bin/python" -I -c "$check" 2>"$WORK/row.err") && [[ -f $module ]]; then
    problem="klinelake.core.row does not import with $module: $(tail -n 1 "$WORK/row.err")"
    rm -f "$module"
    row_path=$("$VENV/bin/python" -I -c "$check" 2>"$WORK/row.err") || true
  fi
  [[ -n $row_path ]] ||
    die "klinelake.core.row does not import, compiled row path or not: $(tail -n 1 "$WORK/row.err")"
  [[ $row_path == compiled || -n $problem ]] || problem="klinelake.core.row did not load $module"
else
  printf 'startup.sh: PIP_INSTALL_DEPS=0: klinelake.core.row not imported (no dependencies)\n'
fi
if [[ -n $problem ]]; then
  printf 'startup.sh: WARNING: no compiled row path: %s. The backfill and the streamer run on the pure Python path: the same rows, about twice the CPU per row (docs/BENCHMARKS.md, issue 15). Install a C compiler and the Python headers (apt-get install gcc python3-dev) and run the startup script again.\n' "$problem" >&2
fi
printf 'startup.sh: the backfill and the streamer use the %s row path\n' "$row_path"

# Last: deploy_vm.sh's preflight waits for this, so it runs what the services will run.
printf '%s\n' "$have_sha" >"$WORK/installed-wheel.sha256"
install_file "$WORK/installed-wheel.sha256" "$P/opt/klines/installed-wheel.sha256" 0644

listed() { [[ " ${markets[*]} " == *" $1 "* ]]; }

step "migration from $OLD_UNIT"
# Deployments before MARKETS ran one unit, streamer.service, with /etc/klines/streamer.env and its
# state directly in /var/lib/klines: that was the spot market, so its spool and checkpoints move
# to /var/lib/klines/spot (streamer@spot resumes from them). Once: a later boot finds nothing.
if [[ -f $UNIT_DIR/$OLD_UNIT ]]; then
  if on_vm && [[ $SKIP_SYSTEMCTL != 1 ]]; then
    systemctl disable --now "$OLD_UNIT" || true # stop: SIGTERM, the spool is flushed to disk
  fi
  if [[ -d $STATE && ! -e $STATE/spot ]]; then
    # Staged beside the state, not in $WORK: renames on one filesystem (nothing copied), and a
    # failure or a crash midway leaves every file under $STATE (the EXIT trap removes $WORK),
    # where the next run goes on from.
    mkdir -p "$STATE/.spot-migrating"
    find "$STATE" -mindepth 1 -maxdepth 1 ! -name spot ! -name um ! -name cm \
      ! -name .spot-migrating -exec mv -t "$STATE/.spot-migrating" {} +
    mv "$STATE/.spot-migrating" "$STATE/spot"
    ! on_vm || chown -R "$SERVICE_USER:$SERVICE_USER" "$STATE/spot"
    printf 'startup.sh: moved the state of %s to %s/spot\n' "$OLD_UNIT" "$STATE"
  fi
  # Last: until the state has moved, the next run still finds the old unit and migrates.
  rm -f "$UNIT_DIR/$OLD_UNIT" "$ETC/streamer.env"
  printf 'startup.sh: %s replaced by streamer@spot.service\n' "$OLD_UNIT"
else
  printf 'startup.sh: no %s, nothing to migrate\n' "$OLD_UNIT"
fi

mkdir -p "$ETC"
for m in "${markets[@]}"; do
  step "configuration $ETC/streamer-$m.env"
  install_file "$WORK/streamer-$m.env" "$ETC/streamer-$m.env" 0640
  if on_vm; then
    chown "root:$SERVICE_USER" "$ETC/streamer-$m.env"
  fi
done

step "systemd unit $UNIT_DIR/$UNIT_NAME"
mkdir -p "$UNIT_DIR"
install_file "$WORK/$UNIT_NAME" "$UNIT_DIR/$UNIT_NAME" 0644

step "ops agent"
if on_vm && [[ ${SKIP_OPS_AGENT:-0} != 1 ]]; then
  # Google's installer adds its apt repository and installs google-cloud-ops-agent; re-runs keep
  # the installed version. Our pipeline: journald entries of the streamer@ units, JSON parsed.
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
# Markets dropped from MARKETS: stop their unit, remove their env file; keep their state.
for env in "$ETC"/streamer-*.env; do
  [[ -e $env ]] || continue
  m=${env##*/streamer-}
  m=${m%.env}
  listed "$m" && continue
  if on_vm && [[ $SKIP_SYSTEMCTL != 1 ]]; then
    systemctl disable --now "streamer@$m.service" || true
  fi
  rm -f "$env"
  printf 'startup.sh: market %s is no longer configured: streamer@%s stopped, disabled\n' "$m" "$m"
done
if on_vm && [[ $SKIP_SYSTEMCTL != 1 ]]; then
  systemctl daemon-reload
  for m in "${markets[@]}"; do
    systemctl enable "streamer@$m.service"
    # restart, not start: a new wheel must replace the running process.
    systemctl restart "streamer@$m.service"
    systemctl --no-pager --lines=0 status "streamer@$m.service" || true
  done
else
  printf 'startup.sh: systemctl skipped (ROOT=%s, SKIP_SYSTEMCTL=%s)\n' "$ROOT" "$SKIP_SYSTEMCTL"
fi
printf 'startup.sh: done\n'
