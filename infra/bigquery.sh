#!/usr/bin/env bash
# BigQuery over the lake, idempotently (docs/querying.md shows how to use it):
#   * a dataset (BQ_DATASET, default "klines", in BQ_LOCATION, default REGION: the bucket's),
#   * klines_raw: an external table over gs://BUCKET/raw/binance_*.jsonl (spot) with the schema
#     infra/bigquery/klines.table.json (the one source of truth: docs and tests read it too),
#   * halts_raw: an external table over gs://BUCKET/meta/binance_*.empty.jsonl (contract 4),
#   * klines: the typed view (exact NUMERIC decimals, TIMESTAMP_MILLIS times), and halts.
#
#   infra/bigquery.sh [--config FILE] [--dry-run]
# A re-run changes nothing; a table or view whose definition differs from the repo is updated.
# The bq CLI ships with the gcloud SDK; BQ=/path/to/bq overrides it.
# shellcheck source=infra/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BQ="${BQ:-bq}"
BQ_DIR="$INFRA_DIR/bigquery"
PYTHON="${PYTHON:-}"

# view_sql FILE: the view's SQL on one line (its "--" comment lines dropped, so that the command
# prints as one pasteable line), with ${PROJECT} and ${DATASET} filled in.
view_sql() {
  local sql="" line
  while IFS= read -r line || [[ -n $line ]]; do
    line="${line#"${line%%[![:space:]]*}"}"
    [[ -z $line || $line == --* ]] && continue
    sql+="${sql:+ }$line"
  done <"$1"
  # shellcheck disable=SC2016  # the placeholders are literal text in the .sql files
  sql=${sql//'${PROJECT}'/$PROJECT}
  # shellcheck disable=SC2016
  printf '%s' "${sql//'${DATASET}'/$BQ_DATASET}"
}

# differs TABLE_JSON KIND WANT...: does the existing table's definition differ from ours?
# KIND external: WANT = schema file, source URI; KIND view: WANT = SQL.
differs() {
  pick_python
  "$PYTHON" - "$@" <<'PY'
import json, sys
have, kind, *want = sys.argv[1:]
t = json.loads(have)
if kind == "view":
    same = t.get("view", {}).get("query") == want[0] and not t["view"].get("useLegacySql")
else:
    fields = [(f["name"], f["type"], f.get("mode", "NULLABLE")) for f in t.get("schema", {}).get("fields", [])]
    ours = [(f["name"], f["type"], f.get("mode", "NULLABLE")) for f in json.load(open(want[0]))]
    ext = t.get("externalDataConfiguration", {})
    same = fields == ours and ext.get("sourceUris") == [want[1]] and ext.get("sourceFormat") == "NEWLINE_DELIMITED_JSON"
sys.exit(1 if same else 0)
PY
}

ensure_dataset() {
  if exists "$BQ" "--project_id=$PROJECT" show --format=none "${PROJECT}:${BQ_DATASET}"; then
    unchanged "dataset ${PROJECT}:${BQ_DATASET}"
  else
    run "$BQ" "--project_id=$PROJECT" "--location=$BQ_LOCATION" mk --dataset \
      "--description=Binance klines lake (gs://${BUCKET}): raw external tables and typed views" \
      "${PROJECT}:${BQ_DATASET}"
  fi
}

# ensure_external NAME SCHEMA_FILE URI DESCRIPTION
ensure_external() {
  local name=$1 schema=$2 uri=$3 description=$4 ref="${PROJECT}:${BQ_DATASET}.$1" have
  local definition="${schema}@NEWLINE_DELIMITED_JSON=${uri}"
  if ! exists "$BQ" "--project_id=$PROJECT" show --format=none "$ref"; then
    run "$BQ" "--project_id=$PROJECT" mk --table "--description=$description" \
      "--external_table_definition=$definition" "$ref"
    return
  fi
  have=$("$BQ" "--project_id=$PROJECT" show --format=json "$ref")
  if differs "$have" external "$schema" "$uri"; then
    note "table $name differs from infra/bigquery: updating its definition"
    run "$BQ" "--project_id=$PROJECT" update "--external_table_definition=$definition" "$ref"
  else
    unchanged "external table $ref"
  fi
}

# ensure_view NAME SQL_FILE DESCRIPTION
ensure_view() {
  local name=$1 sql description=$3 ref="${PROJECT}:${BQ_DATASET}.$1" have
  sql=$(view_sql "$2")
  if ! exists "$BQ" "--project_id=$PROJECT" show --format=none "$ref"; then
    run "$BQ" "--project_id=$PROJECT" mk --use_legacy_sql=false "--description=$description" \
      "--view=$sql" "$ref"
    return
  fi
  have=$("$BQ" "--project_id=$PROJECT" show --format=json "$ref")
  if differs "$have" view "$sql"; then
    note "view $name differs from infra/bigquery/$(basename "$2"): updating its query"
    run "$BQ" "--project_id=$PROJECT" update --use_legacy_sql=false "--view=$sql" "$ref"
  else
    unchanged "view $ref"
  fi
}

bigquery_resources() {
  step "bigquery: dataset"
  ensure_dataset
  step "bigquery: external tables over the lake"
  ensure_external klines_raw "$BQ_DIR/klines.table.json" "gs://${BUCKET}/raw/binance_*.jsonl" \
    "Spot kline rows of the lake, as stored (decimals as exact strings)"
  ensure_external halts_raw "$BQ_DIR/halts.table.json" \
    "gs://${BUCKET}/meta/binance_*.empty.jsonl" "Confirmed-empty ranges (exchange halts)"
  step "bigquery: views"
  ensure_view klines "$BQ_DIR/klines.view.sql" "Spot klines, typed: NUMERIC decimals, timestamps"
  ensure_view halts "$BQ_DIR/halts.view.sql" "Exchange halts per stream"
}

bigquery_main() {
  while (($#)); do
    case $1 in
      --config) CONFIG_FILE=$2; shift ;;
      --config=*) CONFIG_FILE=${1#*=} ;;
      --dry-run) DRY_RUN=1 ;;
      -h | --help)
        printf 'usage: %s [options]\n' "$0"
        usage_common
        return 0 ;;
      *) die "unknown argument: $1" ;;
    esac
    shift
  done
  load_config
  BQ_DATASET="${BQ_DATASET:-klines}"
  BQ_LOCATION="${BQ_LOCATION:-$REGION}"
  bigquery_resources
  printf '\nDone: BigQuery dataset %s:%s is in place.\n' "$PROJECT" "$BQ_DATASET"
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  bigquery_main "$@"
fi
