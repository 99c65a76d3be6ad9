#!/usr/bin/env bash
# Remove what bootstrap.sh, deploy_function.sh, deploy_vm.sh and monitoring.sh created, in
# reverse order: push and dead-letter subscriptions, the metric and alert policies, function, VM, static IP, topics, the service accounts'
# bindings on the bucket, the service accounts. The bucket and its objects (the lake) are kept
# unless --delete-data is given. Enabled APIs are left enabled.
# Each resource is described first; what is already gone is reported as "absent, nothing to do".
#
# usage: infra/teardown.sh [--config FILE] [--dry-run] [--yes] [--delete-data]
# shellcheck source=infra/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DRY_RUN_ASSUME=present # under --dry-run, show every delete
DELETE_DATA=0
YES=0

# remove DESCRIPTION GCLOUD_CMD...: GCLOUD_CMD is the resource's `describe` command; if it finds
# the resource, the same command with `delete` for `describe` (and --quiet) removes it.
remove() {
  local what=$1 arg swapped=0
  shift
  local -a delete=()
  for arg in "$@"; do
    if [[ $swapped == 0 && $arg == describe ]]; then
      arg=delete
      swapped=1
    fi
    delete+=("$arg")
  done
  if exists "$@"; then
    run "${delete[@]}" --quiet
  else
    absent "$what"
  fi
}

# revoke RESOURCE MEMBER ROLE [--all-conditions]: remove a bucket binding if present.
revoke_bucket() {
  local member=$1 role=$2
  shift 2
  if has_binding "storage buckets" "gs://$BUCKET" "$member" "$role" "--project=$PROJECT"; then
    run_q "$GCLOUD" storage buckets remove-iam-policy-binding "gs://$BUCKET" "--project=$PROJECT" \
      "--member=$member" "--role=$role" "$@"
  else
    absent "$role for $member on gs://$BUCKET"
  fi
}

USAGE='  --yes           required to delete for real (not needed with --dry-run)
  --delete-data   also delete the bucket and every object in it (the lake)
'

main() {
  parse_args --yes:YES=1 --delete-data:DELETE_DATA=1 -- "$@"
  load_config
  if [[ $DRY_RUN != 1 && $YES != 1 ]]; then
    die "this deletes the deployment in project $PROJECT; re-run with --yes (or --dry-run to see what)"
  fi

  step "subscriptions"
  remove "subscription $PUSH_SUBSCRIPTION" \
    "$GCLOUD" pubsub subscriptions describe "$PUSH_SUBSCRIPTION" "--project=$PROJECT"
  remove "subscription $DEAD_LETTER_SUBSCRIPTION" \
    "$GCLOUD" pubsub subscriptions describe "$DEAD_LETTER_SUBSCRIPTION" "--project=$PROJECT"

  step "monitoring"
  remove "metric $WRITES_METRIC" \
    "$GCLOUD" logging metrics describe "$WRITES_METRIC" "--project=$PROJECT"
  local policies policy
  # Our policies' display names start with "klines: " (infra/monitoring_policies.py).
  policies=$(DRY_VALUE="projects/$PROJECT/alertPolicies/DRY-RUN" read_value \
    "$GCLOUD" alpha monitoring policies list "--project=$PROJECT" \
    '--filter=displayName:"klines: "' '--format=value(name)')
  [[ $DRY_RUN != 1 ]] || printf '? %s  (dry-run: not checked)\n' "$(fmt_cmd "$GCLOUD" alpha \
    monitoring policies list "--project=$PROJECT" '--filter=displayName:"klines: "' \
    '--format=value(name)')"
  for policy in $policies; do
    run "$GCLOUD" alpha monitoring policies delete "$policy" "--project=$PROJECT" --quiet
  done
  [[ -n $policies ]] || absent "alert policies"

  step "function"
  remove "function $FUNCTION_NAME" \
    "$GCLOUD" functions describe "$FUNCTION_NAME" --gen2 "--region=$REGION" "--project=$PROJECT"

  step "vm"
  # Deleting the VM removes every streamer@MARKET unit, env file and state directory on it.
  remove "instance $VM_NAME" \
    "$GCLOUD" compute instances describe "$VM_NAME" "--zone=$VM_ZONE" "--project=$PROJECT"
  # A reserved address that is not attached to a running VM is billed: release it too.
  remove "address $ADDRESS_NAME" \
    "$GCLOUD" compute addresses describe "$ADDRESS_NAME" "--region=$VM_REGION" "--project=$PROJECT"

  step "topics"
  remove "topic $TOPIC" \
    "$GCLOUD" pubsub topics describe "$TOPIC" "--project=$PROJECT"
  remove "topic $DEAD_LETTER_TOPIC" \
    "$GCLOUD" pubsub topics describe "$DEAD_LETTER_TOPIC" "--project=$PROJECT"

  step "bucket"
  if [[ $DELETE_DATA == 1 ]]; then
    if exists "$GCLOUD" storage buckets describe "gs://$BUCKET" "--project=$PROJECT"; then
      run "$GCLOUD" storage rm --recursive "gs://$BUCKET" "--project=$PROJECT"
    else
      absent "bucket gs://$BUCKET"
    fi
  elif exists "$GCLOUD" storage buckets describe "gs://$BUCKET" "--project=$PROJECT"; then
    note "keeping gs://$BUCKET and its objects (--delete-data deletes them); removing our bindings"
    revoke_bucket "serviceAccount:$FUNCTION_SA_EMAIL" roles/storage.objectUser --all
    revoke_bucket "serviceAccount:$STREAMER_SA_EMAIL" roles/storage.objectViewer --all
  else
    absent "bucket gs://$BUCKET"
  fi

  step "service accounts"
  local sa
  for sa in "$STREAMER_SA_EMAIL" "$FUNCTION_SA_EMAIL" "$PUSH_SA_EMAIL"; do
    remove "service account $sa" \
      "$GCLOUD" iam service-accounts describe "$sa" "--project=$PROJECT"
  done
  printf '\nDone: teardown of %s.\n' "$PROJECT"
}

main "$@"
