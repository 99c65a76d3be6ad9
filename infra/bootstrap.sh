#!/usr/bin/env bash
# One-time (and re-runnable) setup of a fresh project:
#   apis     enable the APIs the pipeline uses
#   bucket   the lake bucket: uniform bucket-level access, public access prevention, no soft
#            delete, lifecycle rule deleting staged part objects (staging/) after 1 day
#   pubsub   topic, dead-letter topic, dead-letter inspection subscription (infra/pubsub.sh)
#   accounts the three service accounts (streamer VM, function runtime, push identity)
#   iam      least-privilege bindings, each on one resource, none on the project
#
# usage: infra/bootstrap.sh [--config FILE] [--dry-run] [--only STEP[,STEP...]]
# shellcheck source=infra/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=infra/pubsub.sh
source "$INFRA_DIR/pubsub.sh"

ALL_STEPS="apis,bucket,pubsub,accounts,iam"
APIS=(
  pubsub.googleapis.com
  storage.googleapis.com
  iam.googleapis.com
  cloudfunctions.googleapis.com
  run.googleapis.com
  cloudbuild.googleapis.com
  artifactregistry.googleapis.com
  compute.googleapis.com
  logging.googleapis.com
)

step_apis() {
  step "apis"
  local enabled missing=() api
  enabled=$(DRY_VALUE="" read_value "$GCLOUD" services list --enabled "--project=$PROJECT" \
    --format='value(config.name)')
  [[ $DRY_RUN != 1 ]] || printf '? %s  (dry-run: not checked)\n' \
    "$(fmt_cmd "$GCLOUD" services list --enabled "--project=$PROJECT" --format='value(config.name)')"
  for api in "${APIS[@]}"; do
    if grep -qxF "$api" <<<"$enabled"; then
      unchanged "api $api"
    else
      missing+=("$api")
    fi
  done
  if ((${#missing[@]})); then
    run "$GCLOUD" services enable "${missing[@]}" "--project=$PROJECT"
  fi
}

step_bucket() {
  step "bucket"
  local lifecycle="$INFRA_DIR/lifecycle.json"
  if exists "$GCLOUD" storage buckets describe "gs://$BUCKET" "--project=$PROJECT"; then
    # Settings are compared one by one and fixed in place when they drifted.
    local have
    have=$("$GCLOUD" storage buckets describe "gs://$BUCKET" "--project=$PROJECT" \
      --format='value[separator="|"](uniform_bucket_level_access,public_access_prevention,soft_delete_policy.retentionDurationSeconds)')
    if [[ ${have,,} == "true|enforced|0" || ${have,,} == "true|enforced|" ]]; then
      unchanged "bucket gs://$BUCKET settings"
    else
      note "bucket settings drifted (have: $have)"
      run "$GCLOUD" storage buckets update "gs://$BUCKET" "--project=$PROJECT" \
        --uniform-bucket-level-access --public-access-prevention --clear-soft-delete
    fi
    local current
    current=$("$GCLOUD" storage buckets describe "gs://$BUCKET" "--project=$PROJECT" \
      --format='json(lifecycle_config)')
    if python3 - "$lifecycle" "$current" <<'PY'
import json, sys
want = json.load(open(sys.argv[1]))
have = (json.loads(sys.argv[2] or "{}") or {}).get("lifecycle_config") or {}
sys.exit(0 if have == want else 1)
PY
    then
      unchanged "bucket gs://$BUCKET lifecycle rule"
    else
      run "$GCLOUD" storage buckets update "gs://$BUCKET" "--project=$PROJECT" \
        "--lifecycle-file=$lifecycle"
    fi
  else
    # No soft delete: every compose and merge replaces the object, and soft delete would keep
    # (and bill) each replaced generation for 7 days.
    run "$GCLOUD" storage buckets create "gs://$BUCKET" "--project=$PROJECT" \
      "--location=$REGION" --default-storage-class=STANDARD \
      --uniform-bucket-level-access --public-access-prevention --soft-delete-duration=0
    run "$GCLOUD" storage buckets update "gs://$BUCKET" "--project=$PROJECT" \
      "--lifecycle-file=$lifecycle"
  fi
}

step_pubsub() {
  pubsub_resources ""
}

ensure_service_account() {
  local id=$1 title=$2 email="$1@${PROJECT}.iam.gserviceaccount.com"
  if exists "$GCLOUD" iam service-accounts describe "$email" "--project=$PROJECT"; then
    unchanged "service account $email"
  else
    run "$GCLOUD" iam service-accounts create "$id" "--project=$PROJECT" "--display-name=$title"
  fi
}

step_accounts() {
  step "accounts"
  ensure_service_account "$STREAMER_SA" "klines streamer VM (publishes to the klines topic)"
  ensure_service_account "$FUNCTION_SA" "klines ingest function runtime (writes the lake)"
  ensure_service_account "$PUSH_SA" "klines push identity (invokes the ingest function)"
}

# prefix_expression PREFIX...: an IAM condition (CEL) true for objects under any of the prefixes
# (https://cloud.google.com/storage/docs/access-control/iam#conditions: resource.name is
# projects/_/buckets/BUCKET/objects/NAME). No commas: gcloud splits --condition on them.
prefix_expression() {
  local p out=""
  for p in "$@"; do
    out+="${out:+ || }resource.name.startsWith(\"projects/_/buckets/${BUCKET}/objects/${p}\")"
  done
  printf '%s' "$out"
}

step_iam() {
  step "iam"
  local agent
  agent=$(pubsub_agent)
  # The Pub/Sub service agent may not exist until first used: create it (a no-op when it exists)
  # unless it already holds its first binding.
  if ! has_binding "pubsub topics" "$DEAD_LETTER_TOPIC" "serviceAccount:$agent" \
    roles/pubsub.publisher "--project=$PROJECT"; then
    run_q "$GCLOUD" beta services identity create --service=pubsub.googleapis.com \
      "--project=$PROJECT"
  fi

  # streamer VM: publish to the klines topic, nothing else ...
  grant "pubsub topics" "$TOPIC" "serviceAccount:$STREAMER_SA_EMAIL" roles/pubsub.publisher \
    "--project=$PROJECT"
  # ... and read the wheel it installs at boot, only under artifacts/ (IAM condition; needs
  # uniform bucket-level access).
  GRANT_CONDITION="expression=$(prefix_expression artifacts/),title=artifacts-only" \
    grant "storage buckets" "gs://$BUCKET" "serviceAccount:$STREAMER_SA_EMAIL" \
    roles/storage.objectViewer "--project=$PROJECT"

  # function runtime: create/read/delete objects under the prefixes it writes, and nothing else
  # (raw/ the lake, meta/ confirmed-empty ranges, staging/ parts to compose; never artifacts/,
  # which holds the code the VM installs), and publish poison messages to the dead-letter topic.
  GRANT_CONDITION="expression=$(prefix_expression raw/ meta/ staging/),title=lake-prefixes-only" \
    grant "storage buckets" "gs://$BUCKET" "serviceAccount:$FUNCTION_SA_EMAIL" \
    roles/storage.objectUser "--project=$PROJECT"
  grant "pubsub topics" "$DEAD_LETTER_TOPIC" "serviceAccount:$FUNCTION_SA_EMAIL" \
    roles/pubsub.publisher "--project=$PROJECT"

  # Pub/Sub service agent: forward undeliverable messages to the dead-letter topic (the matching
  # subscriber role on the push subscription is granted by deploy_function.sh, which creates it).
  grant "pubsub topics" "$DEAD_LETTER_TOPIC" "serviceAccount:$agent" roles/pubsub.publisher \
    "--project=$PROJECT"
  # ... and mint OIDC tokens for the push identity only (required for projects that enabled
  # Pub/Sub on or before 2021-04-08; harmless otherwise; GRANT_PUBSUB_TOKEN_CREATOR=false skips).
  if [[ $GRANT_PUBSUB_TOKEN_CREATOR == true ]]; then
    grant "iam service-accounts" "$PUSH_SA_EMAIL" "serviceAccount:$agent" \
      roles/iam.serviceAccountTokenCreator "--project=$PROJECT"
  fi
  # The push identity's roles/run.invoker on the function is granted by deploy_function.sh.
}

USAGE="  --only STEPS    comma list of: $ALL_STEPS (default: all, in that order)
"

main() {
  local only="$ALL_STEPS"
  parse_args --only=only -- "$@"
  load_config
  local s
  IFS=',' read -r -a wanted <<<"$only"
  for s in "${wanted[@]}"; do
    [[ ",$ALL_STEPS," == *",$s,"* ]] || die "unknown step '$s' (steps: $ALL_STEPS)"
  done
  for s in apis bucket pubsub accounts iam; do
    if [[ ",$only," == *",$s,"* ]]; then
      "step_$s"
    fi
  done
  printf '\nDone: bootstrap (%s).\n' "$only"
}

main "$@"
