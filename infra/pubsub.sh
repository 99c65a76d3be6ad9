#!/usr/bin/env bash
# Pub/Sub resources of the pipeline, idempotently:
#   * the klines topic (publishers: streamer, backfill, operators),
#   * the dead-letter topic and a pull subscription to inspect what landed there,
#   * given a push endpoint, the ordered push subscription that feeds the function.
#
# Run alone (it is also what `bootstrap.sh --only pubsub` and deploy_function.sh call):
#   infra/pubsub.sh [--config FILE] [--dry-run] [--push-endpoint URL [--push-audience URL]]
# With CLOUDSDK_API_ENDPOINT_OVERRIDES_PUBSUB pointing at the Pub/Sub emulator it runs for real
# against the emulator (tests/infra does exactly that, twice).
# shellcheck source=infra/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ensure_topic() {
  local name=$1
  if exists "$GCLOUD" pubsub topics describe "$name" "--project=$PROJECT"; then
    unchanged "topic $name"
  else
    run "$GCLOUD" pubsub topics create "$name" "--project=$PROJECT"
  fi
}

# ensure_pull_subscription NAME TOPIC: the dead-letter inspection subscription. It never expires
# (the default is to delete a subscription after 31 days without activity) and keeps messages for
# DEAD_LETTER_RETENTION.
ensure_pull_subscription() {
  local name=$1 topic=$2
  if exists "$GCLOUD" pubsub subscriptions describe "$name" "--project=$PROJECT"; then
    local current
    current=$("$GCLOUD" pubsub subscriptions describe "$name" "--project=$PROJECT" \
      --format='value(topic)')
    [[ $current == "projects/${PROJECT}/topics/${topic}" ]] ||
      die "subscription $name exists but is attached to $current, not $topic: delete it first"
    unchanged "subscription $name"
  else
    run "$GCLOUD" pubsub subscriptions create "$name" "--project=$PROJECT" "--topic=$topic" \
      --ack-deadline=60 "--message-retention-duration=${DEAD_LETTER_RETENTION}" \
      --expiration-period=never
  fi
}

# ensure_push_subscription NAME TOPIC ENDPOINT AUDIENCE: the subscription that pushes every
# message to the function, one outstanding message per ordering key ({SYMBOL}@{interval}), with
# exponential retry and the dead-letter policy. Ordering and topic cannot be changed on an
# existing subscription; everything else is updated in place when it differs (e.g. a new
# function URL), and left alone when it matches.
ensure_push_subscription() {
  local name=$1 topic=$2 endpoint=$3 audience=$4
  local -a mutable=(
    "--push-endpoint=${endpoint}"
    "--push-auth-service-account=${PUSH_SA_EMAIL}"
    "--push-auth-token-audience=${audience}"
    "--ack-deadline=${PUSH_ACK_DEADLINE}"
    "--min-retry-delay=${MIN_RETRY_DELAY}"
    "--max-retry-delay=${MAX_RETRY_DELAY}"
    "--dead-letter-topic=${DEAD_LETTER_TOPIC_PATH}"
    "--max-delivery-attempts=${MAX_DELIVERY_ATTEMPTS}"
  )
  if ! exists "$GCLOUD" pubsub subscriptions describe "$name" "--project=$PROJECT"; then
    run "$GCLOUD" pubsub subscriptions create "$name" "--project=$PROJECT" "--topic=$topic" \
      --enable-message-ordering "${mutable[@]}" --expiration-period=never
    return
  fi
  local have want
  local -a fields
  have=$("$GCLOUD" pubsub subscriptions describe "$name" "--project=$PROJECT" \
    --format='value[separator="|"](topic,enableMessageOrdering,pushConfig.pushEndpoint,pushConfig.oidcToken.serviceAccountEmail,pushConfig.oidcToken.audience,ackDeadlineSeconds,retryPolicy.minimumBackoff,retryPolicy.maximumBackoff,deadLetterPolicy.deadLetterTopic,deadLetterPolicy.maxDeliveryAttempts,expirationPolicy.ttl)')
  IFS='|' read -r -a fields <<<"$have"
  [[ ${fields[0]} == "projects/${PROJECT}/topics/${topic}" ]] ||
    die "subscription $name is attached to ${fields[0]}, not $topic: it cannot be moved; delete it (infra/teardown.sh) and re-run"
  [[ ${fields[1],,} == true ]] ||
    die "subscription $name exists without message ordering, which cannot be turned on later; delete it (infra/teardown.sh) and re-run"
  # The last field, expirationPolicy.ttl, is empty when the subscription never expires.
  want="projects/${PROJECT}/topics/${topic}|${fields[1]}|${endpoint}|${PUSH_SA_EMAIL}|${audience}"
  want+="|${PUSH_ACK_DEADLINE}|$(seconds "$MIN_RETRY_DELAY")s|$(seconds "$MAX_RETRY_DELAY")s"
  want+="|${DEAD_LETTER_TOPIC_PATH}|${MAX_DELIVERY_ATTEMPTS}|"
  if [[ $have == "$want" ]]; then
    unchanged "subscription $name"
  else
    note "subscription $name differs from the configuration:"
    note "  have: $have"
    note "  want: $want"
    # The expiration policy is only sent when it differs (the emulator refuses to update it).
    [[ -z ${fields[10]:-} ]] || mutable+=(--expiration-period=never)
    run "$GCLOUD" pubsub subscriptions update "$name" "--project=$PROJECT" "${mutable[@]}"
  fi
}

# seconds DURATION: 10s / 10m / 1h / 1d -> seconds, to compare with what the API returns ("600s").
seconds() {
  local d=$1 n=${1%[smhd]}
  case $d in
    *s) printf '%s' "$n" ;;
    *m) printf '%s' "$((n * 60))" ;;
    *h) printf '%s' "$((n * 3600))" ;;
    *d) printf '%s' "$((n * 86400))" ;;
    *) printf '%s' "$d" ;;
  esac
}

# pubsub_resources [ENDPOINT [AUDIENCE]]
pubsub_resources() {
  local endpoint=${1:-} audience=${2:-}
  step "pubsub: topics"
  ensure_topic "$TOPIC"
  ensure_topic "$DEAD_LETTER_TOPIC"
  step "pubsub: dead-letter inspection subscription"
  ensure_pull_subscription "$DEAD_LETTER_SUBSCRIPTION" "$DEAD_LETTER_TOPIC"
  if [[ -n $endpoint ]]; then
    step "pubsub: ordered push subscription"
    ensure_push_subscription "$PUSH_SUBSCRIPTION" "$TOPIC" "$endpoint" "${audience:-$endpoint}"
  else
    note "no push endpoint given: the push subscription is created by infra/deploy_function.sh"
  fi
}

USAGE='  --push-endpoint URL  also create/update the ordered push subscription
  --push-audience URL  OIDC audience (default: the endpoint)
'

pubsub_main() {
  local endpoint="${PUSH_ENDPOINT:-}" audience="${PUSH_AUDIENCE:-}"
  parse_args --push-endpoint=endpoint --push-audience=audience -- "$@"
  load_config
  pubsub_resources "$endpoint" "$audience"
  printf '\nDone: Pub/Sub resources are in place.\n'
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  pubsub_main "$@"
fi
