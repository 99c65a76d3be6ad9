#!/usr/bin/env bash
# Deploy (or update) the streamer VM:
#   1. a static external IP (regional): Binance sees one stable address,
#   2. the project wheel, built reproducibly (SOURCE_DATE_EPOCH) from a clean copy of the repo and
#      uploaded to gs://BUCKET/artifacts/<sha256-prefix>/<wheel> (a new build gets a new URL),
#   3. an e2-micro VM running as the streamer service account (scopes cloud-platform; IAM decides),
#      with metadata: startup-script (infra/startup.sh), streamer-service (infra/streamer.service),
#      streamer-env (the streamer's environment, from the config) and wheel-url.
# A re-run with nothing changed changes nothing (the instance carries a fingerprint label). When
# something changed, the metadata is updated and the VM is stopped and started, so the startup
# script installs the new wheel and restarts the unit (--no-restart leaves that to you:
# `gcloud compute ssh VM -- sudo google_metadata_script_runner startup`).
#
# usage: infra/deploy_vm.sh [--config FILE] [--dry-run] [--no-restart] [--build-dir DIR]
#                           [--wheel FILE]
# shellcheck source=infra/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BUILD_DIR="$INFRA_DIR/.build/vm"
RESTART=1
WHEEL_FILE=""
PYTHON="${PYTHON:-}"
SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-315532800}" # 1980-01-01: zip's epoch; stable wheels

ensure_address() {
  step "static external IP $ADDRESS_NAME"
  if exists "$GCLOUD" compute addresses describe "$ADDRESS_NAME" "--region=$REGION" \
    "--project=$PROJECT"; then
    unchanged "address $ADDRESS_NAME"
  else
    run "$GCLOUD" compute addresses create "$ADDRESS_NAME" "--region=$REGION" "--project=$PROJECT"
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
  WHEEL_SHA=$(sha256sum "$WHEEL_FILE" | cut -c1-16)
  WHEEL_URL="gs://${BUCKET}/artifacts/${WHEEL_SHA}/$(basename "$WHEEL_FILE")"
  note "wheel $(basename "$WHEEL_FILE") sha256 ${WHEEL_SHA}..."
}

build_from_source() {
  local src=$1 dist=$2 d
  # Build from a copy: the working tree stays clean (no build/ or egg-info at the repo root).
  cp "$REPO_ROOT/pyproject.toml" "$src/"
  [[ ! -f $REPO_ROOT/README.md ]] || cp "$REPO_ROOT/README.md" "$src/"
  for d in klinelake streamer backfill ingest_function binance_sim; do
    [[ ! -d $REPO_ROOT/$d ]] ||
      tar -C "$REPO_ROOT" --exclude=__pycache__ --exclude='*.pyc' -cf - "$d" | tar -C "$src" -xf -
  done
  SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH "$PYTHON" -m pip wheel -q --no-deps -w "$dist" "$src"
  WHEEL_FILE=$(find "$dist" -name '*.whl' -print -quit)
  [[ -n $WHEEL_FILE ]] || die "no wheel was built in $dist"
}

upload_wheel() {
  step "upload wheel"
  if exists "$GCLOUD" storage objects describe "$WHEEL_URL" "--project=$PROJECT"; then
    unchanged "object $WHEEL_URL"
  else
    run "$GCLOUD" storage cp "$WHEEL_FILE" "$WHEEL_URL" "--project=$PROJECT"
  fi
}

write_env() {
  ENV_FILE="$BUILD_DIR/streamer.env"
  {
    printf '# written by infra/deploy_vm.sh from %s\n' "$(basename "$CONFIG_FILE")"
    printf 'KLINES_TOPIC=%s\n' "$TOPIC_PATH"
    printf 'SYMBOLS=%s\n' "$SYMBOLS"
    printf 'INTERVALS=%s\n' "$INTERVALS"
    printf 'BINANCE_REST_URL=%s\n' "$BINANCE_REST_URL"
    printf 'BINANCE_WS_URL=%s\n' "$BINANCE_WS_URL"
    printf 'GOOGLE_CLOUD_PROJECT=%s\n' "$PROJECT"
  } >"$ENV_FILE"
}

ensure_instance() {
  step "instance $VM_NAME"
  write_env
  local fp have=""
  local metadata_files="startup-script=${INFRA_DIR}/startup.sh,streamer-service=${INFRA_DIR}/streamer.service,streamer-env=${ENV_FILE}"
  local metadata="wheel-url=${WHEEL_URL},enable-oslogin=TRUE"
  fp=$(cat "$INFRA_DIR/startup.sh" "$INFRA_DIR/streamer.service" "$ENV_FILE" <(
    printf '%s\n' "$metadata" "$MACHINE_TYPE" "$STREAMER_SA_EMAIL" "$ADDRESS_NAME"
  ) | sha256sum | cut -c1-40)
  if exists "$GCLOUD" compute instances describe "$VM_NAME" "--zone=$ZONE" "--project=$PROJECT"; then
    have=$("$GCLOUD" compute instances describe "$VM_NAME" "--zone=$ZONE" "--project=$PROJECT" \
      --format='value(labels.klines-fingerprint)')
    if [[ $have == "$fp" ]]; then
      unchanged "instance $VM_NAME (klines-fingerprint $fp)"
      return
    fi
    note "instance $VM_NAME runs another version (fingerprint '${have}', want $fp): updating"
    run "$GCLOUD" compute instances add-metadata "$VM_NAME" "--zone=$ZONE" "--project=$PROJECT" \
      "--metadata=$metadata" "--metadata-from-file=$metadata_files"
    run "$GCLOUD" compute instances update "$VM_NAME" "--zone=$ZONE" "--project=$PROJECT" \
      "--update-labels=klines-fingerprint=$fp"
    if [[ $RESTART == 1 ]]; then
      # stop is graceful (ACPI shutdown: systemd sends SIGTERM, the streamer flushes its spool);
      # at start the startup script installs the new wheel. The static IP stays.
      run "$GCLOUD" compute instances stop "$VM_NAME" "--zone=$ZONE" "--project=$PROJECT"
      run "$GCLOUD" compute instances start "$VM_NAME" "--zone=$ZONE" "--project=$PROJECT"
    else
      note "--no-restart: run the startup script again to roll out:"
      note "  gcloud compute ssh $VM_NAME --zone=$ZONE --project=$PROJECT -- sudo google_metadata_script_runner startup"
    fi
  else
    run "$GCLOUD" compute instances create "$VM_NAME" "--zone=$ZONE" "--project=$PROJECT" \
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

main() {
  while (($#)); do
    case $1 in
      --config) CONFIG_FILE=$2; shift ;;
      --config=*) CONFIG_FILE=${1#*=} ;;
      --dry-run) DRY_RUN=1 ;;
      --no-restart) RESTART=0 ;;
      --build-dir) BUILD_DIR=$2; shift ;;
      --build-dir=*) BUILD_DIR=${1#*=} ;;
      --wheel) WHEEL_FILE=$2; shift ;;
      --wheel=*) WHEEL_FILE=${1#*=} ;;
      -h | --help)
        printf 'usage: %s [options]\n' "$0"
        usage_common
        printf '  --no-restart     update metadata only; do not stop/start a running VM\n'
        printf '  --build-dir DIR  where to build the wheel (default: infra/.build/vm)\n'
        printf '  --wheel FILE     deploy this wheel (e.g. a CI artifact) instead of building one\n'
        return 0 ;;
      *) die "unknown argument: $1" ;;
    esac
    shift
  done
  load_config
  pick_python
  ensure_address
  build_wheel
  upload_wheel
  ensure_instance
  printf '\nDone: VM %s (wheel %s).\n' "$VM_NAME" "$WHEEL_URL"
}

main "$@"
