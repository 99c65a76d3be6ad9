#!/usr/bin/env bash
# Deploy (or update) the streamer VM:
#   1. a static external IP (regional): Binance sees one stable address,
#   2. the project wheel, built reproducibly (SOURCE_DATE_EPOCH) from a clean copy of the repo and
#      uploaded to gs://BUCKET/artifacts/<sha256-prefix>/<wheel> (a new build gets a new URL);
#      pure (py3-none-any, refused otherwise): it carries the row path's C source, which the VM
#      compiles for its own Python (startup.sh, step "compiled row path"),
#   3. an e2-micro VM running as the streamer service account (scopes cloud-platform; IAM decides),
#      with metadata: startup-script (infra/startup.sh), streamer-service (infra/streamer@.service,
#      a template unit), streamer-markets (MARKETS, e.g. "spot um cm"), streamer-env-MARKET (each
#      market's streamer environment, from the config), constraints (constraints.txt),
#      ops-agent-config (infra/ops-agent.yaml), wheel-url and wheel-sha256,
#   4. the preflight: over SSH, `python -m streamer --check` on the VM for each market (exchangeInfo
#      answers and a WS frame arrives for every stream, from the VM's own address); a failure fails
#      the deploy and names the market and the region.
# A re-run with nothing changed changes nothing (the instance carries a fingerprint label). When
# something changed, the metadata is updated and the VM is stopped and started, so the startup
# script installs the new wheel and restarts the unit (--no-restart leaves that to you:
# `gcloud compute ssh VM -- sudo google_metadata_script_runner startup`).
#
# usage: infra/deploy_vm.sh [--config FILE] [--dry-run] [--no-restart] [--no-preflight]
#                           [--build-dir DIR] [--wheel FILE]
# shellcheck source=infra/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BUILD_DIR="$INFRA_DIR/.build/vm"
RESTART=1
PREFLIGHT=1
PREFLIGHT_WAIT_S="${PREFLIGHT_WAIT_S:-900}"
WHEEL_FILE=""
PYTHON="${PYTHON:-}"
SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-315532800}" # 1980-01-01: zip's epoch; stable wheels

ensure_address() {
  step "static external IP $ADDRESS_NAME"
  if exists "$GCLOUD" compute addresses describe "$ADDRESS_NAME" "--region=$VM_REGION" \
    "--project=$PROJECT"; then
    unchanged "address $ADDRESS_NAME"
  else
    run "$GCLOUD" compute addresses create "$ADDRESS_NAME" "--region=$VM_REGION" \
      "--project=$PROJECT"
  fi
}

build_wheel() {
  step "build wheel"
  local src="$BUILD_DIR/src" dist="$BUILD_DIR/dist" d
  rm -rf "$BUILD_DIR"
  mkdir -p "$src" "$dist"
  if [[ -n $WHEEL_FILE ]]; then
    [[ $WHEEL_FILE == *.whl && -f $WHEEL_FILE ]] || die "--wheel $WHEEL_FILE is not a wheel file"
    note "using the given wheel, not building"
  else
    build_from_source "$src" "$dist"
  fi
  check_pure_wheel "$WHEEL_FILE"
  WHEEL_SHA256=$(sha256sum "$WHEEL_FILE" | cut -d' ' -f1)
  WHEEL_URL="gs://${BUCKET}/artifacts/${WHEEL_SHA256:0:16}/$(basename "$WHEEL_FILE")"
  note "wheel $(basename "$WHEEL_FILE") sha256 ${WHEEL_SHA256}"
}

build_from_source() {
  local src=$1 dist=$2 d
  # Build from a copy: the working tree stays clean (no build/ or egg-info at the repo root).
  cp "$REPO_ROOT/pyproject.toml" "$src/"
  [[ ! -f $REPO_ROOT/README.md ]] || cp "$REPO_ROOT/README.md" "$src/"
  # No setup.py: the wheel is pure (py3-none-any) and carries the row path's C source, which the
  # VM compiles for its own Python (startup.sh). In-place builds of it (`make venv` leaves
  # klinelake/core/_rest_page.*.so) are this machine's, never the VM's: left out.
  for d in klinelake streamer backfill ingest_function; do # the production packages only
    [[ ! -d $REPO_ROOT/$d ]] ||
      tar -C "$REPO_ROOT" --exclude=__pycache__ --exclude='*.pyc' --exclude='*.so' \
        --exclude='*.pyd' --exclude='*.dylib' -cf - "$d" | tar -C "$src" -xf -
  done
  SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH "$PYTHON" -m pip wheel -q --no-deps -w "$dist" "$src"
  WHEEL_FILE=$(find "$dist" -name '*.whl' -print -quit)
  [[ -n $WHEEL_FILE ]] || die "no wheel was built in $dist"
}

# check_pure_wheel FILE: the VM installs a pure wheel and builds the compiled row path itself; a
# compiled module in the wheel (built for another machine's Python) would shadow it or not load.
check_pure_wheel() {
  local compiled
  [[ $1 == *-py3-none-any.whl ]] ||
    die "$(basename "$1") is not a pure wheel (want *-py3-none-any.whl): the VM compiles the row path itself"
  compiled=$("$PYTHON" -c 'import sys, zipfile
print(" ".join(n for n in zipfile.ZipFile(sys.argv[1]).namelist()
               if n.endswith((".so", ".pyd", ".dylib"))))' "$1")
  [[ -z $compiled ]] ||
    die "$(basename "$1") holds compiled modules ($compiled): the VM compiles the row path itself from klinelake/core/_rest_page.c; build the wheel without them"
}

upload_wheel() {
  step "upload wheel"
  if exists "$GCLOUD" storage objects describe "$WHEEL_URL" "--project=$PROJECT"; then
    unchanged "object $WHEEL_URL"
  else
    run "$GCLOUD" storage cp "$WHEEL_FILE" "$WHEEL_URL" "--project=$PROJECT"
  fi
}

# write_env: one environment file per market (MARKETS), $BUILD_DIR/streamer-MARKET.env, shipped as
# the metadata key streamer-env-MARKET and installed as /etc/klines/streamer-MARKET.env.
write_env() {
  local m var val
  ENV_FILES=""
  for m in $MARKETS; do
    {
      printf '# written by infra/deploy_vm.sh from %s\n' "$(basename "$CONFIG_FILE")"
      printf 'MARKET=%s\n' "$m"
      printf 'KLINES_TOPIC=%s\n' "$TOPIC_PATH"
      printf 'SYMBOLS=%s\n' "$(market_setting SYMBOLS "$m")"
      printf 'INTERVALS=%s\n' "$(market_setting INTERVALS "$m")"
      # Unset for um/cm: the streamer picks the market's own hosts (docs/markets.md).
      for var in BINANCE_REST_URL BINANCE_WS_URL; do
        val=$(market_setting "$var" "$m")
        [[ -z $val ]] || printf '%s=%s\n' "$var" "$val"
      done
      printf 'GOOGLE_CLOUD_PROJECT=%s\n' "$PROJECT"
    } >"$BUILD_DIR/streamer-$m.env"
    ENV_FILES+=",streamer-env-$m=$BUILD_DIR/streamer-$m.env"
  done
}

ensure_instance() {
  step "instance $VM_NAME"
  write_env
  local fp have=""
  # wheel-sha256 travels in the instance metadata, which only project editors can change: the VM
  # refuses a wheel whose hash differs (whoever can write the bucket cannot plant code).
  local metadata_files="startup-script=${INFRA_DIR}/startup.sh,streamer-service=${INFRA_DIR}/streamer@.service${ENV_FILES},constraints=${REPO_ROOT}/constraints.txt,ops-agent-config=${INFRA_DIR}/ops-agent.yaml"
  # streamer-markets: which streamer@MARKET units the startup script enables ("spot um cm").
  local metadata="wheel-url=${WHEEL_URL},wheel-sha256=${WHEEL_SHA256},streamer-markets=${MARKETS},enable-oslogin=TRUE"
  local -a env_paths=()
  local m
  for m in $MARKETS; do env_paths+=("$BUILD_DIR/streamer-$m.env"); done
  fp=$(cat "$INFRA_DIR/startup.sh" "$INFRA_DIR/streamer@.service" "${env_paths[@]}" \
    "$REPO_ROOT/constraints.txt" "$INFRA_DIR/ops-agent.yaml" <(
    printf '%s\n' "$metadata" "$MACHINE_TYPE" "$STREAMER_SA_EMAIL" "$ADDRESS_NAME"
  ) | sha256sum | cut -c1-40)
  if exists "$GCLOUD" compute instances describe "$VM_NAME" "--zone=$VM_ZONE" "--project=$PROJECT"; then
    have=$("$GCLOUD" compute instances describe "$VM_NAME" "--zone=$VM_ZONE" "--project=$PROJECT" \
      --format='value(labels.klines-fingerprint)')
    if [[ $have == "$fp" ]]; then
      unchanged "instance $VM_NAME (klines-fingerprint $fp)"
      return
    fi
    note "instance $VM_NAME runs another version (fingerprint '${have}', want $fp): updating"
    run "$GCLOUD" compute instances add-metadata "$VM_NAME" "--zone=$VM_ZONE" "--project=$PROJECT" \
      "--metadata=$metadata" "--metadata-from-file=$metadata_files"
    run "$GCLOUD" compute instances update "$VM_NAME" "--zone=$VM_ZONE" "--project=$PROJECT" \
      "--update-labels=klines-fingerprint=$fp"
    if [[ $RESTART == 1 ]]; then
      # stop is graceful (ACPI shutdown: systemd sends SIGTERM, the streamer flushes its spool);
      # at start the startup script installs the new wheel. The static IP stays.
      run "$GCLOUD" compute instances stop "$VM_NAME" "--zone=$VM_ZONE" "--project=$PROJECT"
      run "$GCLOUD" compute instances start "$VM_NAME" "--zone=$VM_ZONE" "--project=$PROJECT"
    else
      note "--no-restart: run the startup script again to roll out:"
      note "  gcloud compute ssh $VM_NAME --zone=$VM_ZONE --project=$PROJECT -- sudo google_metadata_script_runner startup"
    fi
  else
    run "$GCLOUD" compute instances create "$VM_NAME" "--zone=$VM_ZONE" "--project=$PROJECT" \
      "--machine-type=$MACHINE_TYPE" \
      "--image-family=$IMAGE_FAMILY" "--image-project=$IMAGE_PROJECT" \
      "--boot-disk-size=$BOOT_DISK_SIZE" --boot-disk-type=pd-standard \
      "--address=$ADDRESS_NAME" \
      "--service-account=$STREAMER_SA_EMAIL" --scopes=cloud-platform \
      --shielded-secure-boot --shielded-vtpm --shielded-integrity-monitoring \
      "--labels=klines-fingerprint=$fp" \
      "--metadata=$metadata" "--metadata-from-file=$metadata_files"
  fi
}

# The preflight, on the VM itself: wait (bounded) until the startup script has installed this
# wheel, then `python -m streamer --check` as the service user with each market's environment
# (systemd-run: same User= and EnvironmentFile= as the unit streamer@MARKET), one SSH call per
# market so a failure names it. Non-zero fails the deploy.
preflight() {
  step "preflight on $VM_NAME ($VM_ZONE)"
  if [[ $PREFLIGHT == 0 ]]; then
    note "--no-preflight: skipped"
    return
  fi
  local m
  for m in $MARKETS; do
    preflight_market "$m"
  done
}

preflight_market() {
  local m=$1 remote
  remote="timeout ${PREFLIGHT_WAIT_S} sh -c 'until grep -qx ${WHEEL_SHA256} /opt/klines/installed-wheel.sha256 2>/dev/null; do sleep 5; done' || { echo 'the startup script did not install the wheel within ${PREFLIGHT_WAIT_S} s: sudo journalctl -u google-startup-scripts' >&2; exit 3; }; sudo systemd-run --quiet --wait --pipe --collect --uid=klines --property=EnvironmentFile=/etc/klines/streamer-${m}.env /opt/klines/venv/bin/python -m streamer --check"
  local out rc=0
  _RUN_CMD=$(fmt_cmd "$GCLOUD" compute ssh "$VM_NAME" "--zone=$VM_ZONE" "--project=$PROJECT" \
    --quiet "--command=$remote")
  printf '+ %s\n' "$_RUN_CMD"
  [[ $DRY_RUN == 1 ]] && return 0
  out=$("$GCLOUD" compute ssh "$VM_NAME" "--zone=$VM_ZONE" "--project=$PROJECT" --quiet \
    "--command=$remote" 2>&1) || rc=$?
  printf '%s\n' "$out" | sed 's/^/    /'
  if ((rc != 0)); then
    die "preflight of market $m (streamer@$m) failed on $VM_NAME in region $VM_REGION (exit $rc): $(grep -m1 'streamer --check:' <<<"$out" || tail -n1 <<<"$out"). Binance refuses some regions (HTTP 451): set VM_REGION/VM_ZONE to a region it serves (default asia-northeast1) or the market's BINANCE_REST_URL/BINANCE_WS_URL to the market-data hosts (docs/deploy.md, 'Region and endpoints')"
  fi
}

USAGE='  --no-restart     update metadata only; do not stop/start a running VM
  --no-preflight   skip the preflight (streamer --check on the VM)
  --build-dir DIR  where to build the wheel (default: infra/.build/vm)
  --wheel FILE     deploy this wheel (e.g. a CI artifact) instead of building one
'

main() {
  parse_args --no-restart:RESTART=0 --no-preflight:PREFLIGHT=0 --build-dir=BUILD_DIR \
    --wheel=WHEEL_FILE -- "$@"
  load_config
  pick_python
  ensure_address
  build_wheel
  upload_wheel
  ensure_instance
  if [[ $RESTART == 1 ]]; then
    preflight
  fi
  printf '\nDone: VM %s in %s (wheel %s).\n' "$VM_NAME" "$VM_ZONE" "$WHEEL_URL"
}

main "$@"
