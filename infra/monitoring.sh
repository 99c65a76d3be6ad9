#!/usr/bin/env bash
# Watch the pipeline from outside the VM (the VM cannot report its own silence):
#   1. the log-based metric klines_written: one point per batch the ingest function wrote,
#      labelled stream and interval (its write log line carries newest_open_time),
#   2. an alert policy per configured interval (of every market in MARKETS): a stream of that interval wrote nothing for
#      FRESHNESS_BEHIND intervals (metric absence per stream; at most 23h30m, see
#      infra/monitoring_policies.py),
#   3. an alert policy: the dead-letter inspection subscription holds messages.
# The policies notify NOTIFICATION_CHANNELS (channel resource names, comma list; empty: the
# incidents show in the console only). Each carries its fingerprint as the user label
# klines-fingerprint: a re-run with nothing changed changes nothing, a change updates in place.
# What to do when each fires: docs/runbook.md, "Alerts".
#
# usage: infra/monitoring.sh [--config FILE] [--dry-run] [--out-dir DIR]
# shellcheck source=infra/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

OUT_DIR="$INFRA_DIR/.build/monitoring"
PYTHON="${PYTHON:-}"

write_files() {
  step "write metric and policy definitions"
  rm -rf "$OUT_DIR"
  PYTHONPATH="$REPO_ROOT${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" \
    "$INFRA_DIR/monitoring_policies.py" "$OUT_DIR" \
    "--function=$FUNCTION_NAME" "--dead-letter-subscription=$DEAD_LETTER_SUBSCRIPTION" \
    "--intervals=$ALL_INTERVALS" "--behind=$FRESHNESS_BEHIND" \
    "--channels=$NOTIFICATION_CHANNELS" "--metric=$WRITES_METRIC"
  note "definitions: $OUT_DIR"
}

ensure_metric() {
  step "log-based metric $WRITES_METRIC"
  local file="$OUT_DIR/metric.json" have
  if exists "$GCLOUD" logging metrics describe "$WRITES_METRIC" "--project=$PROJECT"; then
    have=$("$GCLOUD" logging metrics describe "$WRITES_METRIC" "--project=$PROJECT" --format=json)
    if python3 - "$file" "$have" <<'PY'
import json, sys
want, have = json.load(open(sys.argv[1])), json.loads(sys.argv[2] or "{}")
keys = ("filter", "labelExtractors")
sys.exit(0 if all(want.get(k) == have.get(k) for k in keys) else 1)
PY
    then
      unchanged "metric $WRITES_METRIC"
    else
      run "$GCLOUD" logging metrics update "$WRITES_METRIC" "--project=$PROJECT" \
        "--config-from-file=$file"
    fi
  else
    run "$GCLOUD" logging metrics create "$WRITES_METRIC" "--project=$PROJECT" \
      "--config-from-file=$file"
  fi
}

ensure_policies() {
  step "alert policies"
  local display file fp found name have
  while IFS=$'\t' read -r display file fp; do
    local -a list=("$GCLOUD" alpha monitoring policies list "--project=$PROJECT"
      "--filter=displayName=\"$display\"" '--format=value(name,userLabels.klines-fingerprint)')
    if [[ $DRY_RUN == 1 ]]; then
      printf '? %s  (dry-run: not checked, assumed absent)\n' "$(fmt_cmd "${list[@]}")"
      found=""
    else
      found=$("${list[@]}") || die "could not list alert policies"
    fi
    if [[ -z $found ]]; then
      run_q "$GCLOUD" alpha monitoring policies create "--project=$PROJECT" \
        "--policy-from-file=$file"
      continue
    fi
    read -r name have <<<"$(head -n1 <<<"$found")"
    if [[ $have == "$fp" ]]; then
      unchanged "alert policy '$display'"
    else
      run_q "$GCLOUD" alpha monitoring policies update "$name" "--project=$PROJECT" \
        "--policy-from-file=$file"
    fi
  done <"$OUT_DIR/policies.tsv"
}

USAGE='  --out-dir DIR   where to write the definitions (default: infra/.build/monitoring)
'

main() {
  parse_args --out-dir=OUT_DIR -- "$@"
  load_config
  pick_python
  write_files
  ensure_metric
  ensure_policies
  printf '\nDone: metric %s and %s alert policies.\n' "$WRITES_METRIC" \
    "$(wc -l <"$OUT_DIR/policies.tsv")"
}

main "$@"
