#!/usr/bin/env bash
# Deploy (or update) the ingest function and the ordered push subscription that feeds it.
#   1. stage a source bundle: ingest_function/main.py as main.py at the root, the ingest_function
#      and klinelake packages, requirements.txt pinned from constraints.txt
#   2. gcloud functions deploy --gen2 (HTTP, not publicly invokable, internal ingress), skipped when
#      the deployed function already carries this bundle's and configuration's fingerprint
#   3. roles/run.invoker for the push identity on the function's Cloud Run service only
#   4. the push subscription (infra/pubsub.sh): --enable-message-ordering, OIDC auth with the push
#      identity, retry policy, dead-letter policy; updated in place when the URL changes
#   5. roles/pubsub.subscriber for the Pub/Sub service agent on that subscription (dead-lettering)
#
# usage: infra/deploy_function.sh [--config FILE] [--dry-run] [--bundle-dir DIR]
# shellcheck source=infra/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=infra/pubsub.sh
source "$INFRA_DIR/pubsub.sh"

BUNDLE_DIR="$INFRA_DIR/.build/function"
PYTHON="${PYTHON:-}"

stage_bundle() {
  step "stage source bundle"
  [[ -f $REPO_ROOT/ingest_function/main.py ]] || die "$REPO_ROOT/ingest_function/main.py not found"
  [[ -d $REPO_ROOT/klinelake ]] || die "$REPO_ROOT/klinelake not found"
  rm -rf "$BUNDLE_DIR"
  mkdir -p "$BUNDLE_DIR"
  # main.py imports ingest_function.handler and klinelake: ship both packages beside it. Not
  # this machine's in-place build of the row path (`make venv`): a binary of its compiler and libc
  # (the function parses messages, not REST pages: it does not use it).
  tar -C "$REPO_ROOT" --exclude=__pycache__ --exclude='*.pyc' --exclude='*.so' --exclude='*.pyd' \
    --exclude='*.dylib' -cf - ingest_function klinelake | tar -C "$BUNDLE_DIR" -xf -
  cp "$REPO_ROOT/ingest_function/main.py" "$BUNDLE_DIR/main.py"
  "$PYTHON" "$INFRA_DIR/function_requirements.py" "$REPO_ROOT" "$BUNDLE_DIR"
  note "bundle: $BUNDLE_DIR ($(find "$BUNDLE_DIR" -type f | wc -l) files)"
}

# fingerprint ARGS...: 40 hex chars over the bundle's files and the deploy flags; stored as a label
# on the function so a re-run with nothing changed deploys nothing.
fingerprint() {
  {
    (cd "$BUNDLE_DIR" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
    printf '%s\n' "$@"
  } | sha256sum | cut -c1-40
}

function_url() {
  # The function's Cloud Run service URL (run.app): Pub/Sub push counts as internal traffic only
  # on the default run.app URL, and that URL is the OIDC audience Cloud Run checks.
  DRY_VALUE="https://${FUNCTION_NAME}-$(project_number).${REGION}.run.app" read_value \
    "$GCLOUD" functions describe "$FUNCTION_NAME" --gen2 "--region=$REGION" "--project=$PROJECT" \
    --format='value(serviceConfig.uri)'
}

deploy() {
  step "deploy function"
  local -a flags=(
    --gen2 "--project=$PROJECT" "--region=$REGION"
    "--runtime=$FUNCTION_RUNTIME" "--source=$BUNDLE_DIR" --entry-point=ingest
    --trigger-http --no-allow-unauthenticated "--ingress-settings=$FUNCTION_INGRESS"
    "--run-service-account=$FUNCTION_SA_EMAIL"
    "--memory=$FUNCTION_MEMORY" "--timeout=$FUNCTION_TIMEOUT"
    "--max-instances=$FUNCTION_MAX_INSTANCES"
    "--set-env-vars=LAKE_URI=${LAKE_URI},DEAD_LETTER_TOPIC=${DEAD_LETTER_TOPIC_PATH},GOOGLE_CLOUD_PROJECT=${PROJECT},ACK_DEADLINE_S=${PUSH_ACK_DEADLINE}"
  )
  local fp have="" f
  local -a fp_flags=()
  for f in "${flags[@]}"; do
    [[ $f == --source=* ]] || fp_flags+=("$f") # where the bundle was staged does not matter
  done
  fp=$(fingerprint "${fp_flags[@]}")
  if exists "$GCLOUD" functions describe "$FUNCTION_NAME" --gen2 "--region=$REGION" \
    "--project=$PROJECT"; then
    have=$("$GCLOUD" functions describe "$FUNCTION_NAME" --gen2 "--region=$REGION" \
      "--project=$PROJECT" --format='value(labels.deploy-fingerprint)')
  fi
  if [[ $have == "$fp" ]]; then
    unchanged "function $FUNCTION_NAME (deploy-fingerprint $fp)"
  else
    run "$GCLOUD" functions deploy "$FUNCTION_NAME" "${flags[@]}" \
      "--update-labels=deploy-fingerprint=$fp" --quiet
  fi
}

invoker() {
  step "push identity may invoke the function"
  grant "run services" "$FUNCTION_NAME" "serviceAccount:$PUSH_SA_EMAIL" roles/run.invoker \
    "--region=$REGION" "--project=$PROJECT"
}

subscription() {
  local url
  url=$(function_url)
  [[ -n $url ]] || die "function $FUNCTION_NAME has no URL yet"
  step "pubsub: topics"
  ensure_topic "$TOPIC"
  ensure_topic "$DEAD_LETTER_TOPIC"
  step "pubsub: ordered push subscription"
  # The path names the topic so functions-framework builds the CloudEvent source from it.
  ensure_push_subscription "$PUSH_SUBSCRIPTION" "$TOPIC" \
    "${url}/projects/${PROJECT}/topics/${TOPIC}" "$url"
  step "pubsub service agent may forward from the push subscription to the dead-letter topic"
  grant "pubsub subscriptions" "$PUSH_SUBSCRIPTION" "serviceAccount:$(pubsub_agent)" \
    roles/pubsub.subscriber "--project=$PROJECT"
}

USAGE='  --bundle-dir DIR  where to stage the source bundle (default: infra/.build/function)
'

main() {
  parse_args --bundle-dir=BUNDLE_DIR -- "$@"
  load_config
  pick_python
  stage_bundle
  deploy
  invoker
  subscription
  printf '\nDone: function %s fed by subscription %s.\n' "$FUNCTION_NAME" "$PUSH_SUBSCRIPTION"
}

main "$@"
