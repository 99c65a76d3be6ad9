# shellcheck shell=bash
# Shared helpers for the infra scripts. Sourced, never executed.
#
# Conventions every script follows:
#   * `set -Eeuo pipefail` and an ERR trap that names the step that failed, so a run stops at the
#     first failure with a message such as:  ERROR: step "bucket" failed (exit 1): gcloud ...
#   * every mutating gcloud call goes through `run`, which prints the exact command first
#     ("+ gcloud ...") and, with --dry-run, prints only;
#   * every resource is looked up with `exists` (a describe) before it is created; a re-run prints
#     "= <resource>: exists, unchanged" and changes nothing;
#   * --dry-run never contacts Google: `exists` does not run the describe, it prints it ("? ...")
#     and assumes the resource is absent (DRY_RUN_ASSUME=absent, the default) so the output shows
#     every command a first run would issue, or present (teardown) so it shows every delete.

set -Eeuo pipefail

INFRA_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="${REPO_ROOT:-$(cd "$INFRA_DIR/.." && pwd)}"
CONFIG_FILE="${CONFIG_FILE:-$INFRA_DIR/config.env}"
DRY_RUN="${DRY_RUN:-0}"
DRY_RUN_ASSUME="${DRY_RUN_ASSUME:-absent}"
CURRENT_STEP="start"
GCLOUD="${GCLOUD:-gcloud}"

_RUN_CMD=""
_on_error() {
  local rc=$1 line=$2 cmd=$3
  if [[ $cmd == '"$@"' || $cmd == '"$@" > /dev/null' ]] && [[ -n $_RUN_CMD ]]; then
    cmd=$_RUN_CMD
  fi
  printf 'ERROR: step "%s" failed (exit %s) at %s line %s: %s\n' \
    "$CURRENT_STEP" "$rc" "$(basename "$0")" "$line" "$cmd" >&2
  exit "$rc"
}
trap '_on_error $? $LINENO "$BASH_COMMAND"' ERR

# die MESSAGE: stop now, naming the current step.
die() {
  printf 'ERROR: step "%s": %s\n' "$CURRENT_STEP" "$*" >&2
  exit 1
}

# step NAME: announce a step; the ERR trap and die() name it.
step() {
  CURRENT_STEP="$1"
  printf '\n==> %s\n' "$1"
}

note() { printf '    %s\n' "$*"; }
unchanged() { printf '= %s: exists, unchanged\n' "$1"; }
absent() { printf '= %s: absent, nothing to do\n' "$1"; }

# fmt_cmd ARGS...: the command as one line that can be pasted into a shell.
fmt_cmd() {
  local out="" a q="'"
  for a in "$@"; do
    if [[ $a =~ ^[A-Za-z0-9_./:=@,+%^-]+$ ]]; then
      out+="$a "
    else
      out+="'${a//$q/$q\\$q$q}' "
    fi
  done
  printf '%s' "${out% }"
}

# run CMD...: print the exact command, then run it unless --dry-run.
run() {
  _RUN_CMD=$(fmt_cmd "$@")
  printf '+ %s\n' "$_RUN_CMD"
  if [[ $DRY_RUN == 1 ]]; then
    return 0
  fi
  "$@"
}

# run_q CMD...: like run, but discard the command's standard output (e.g. the IAM policy that
# add-iam-policy-binding prints in full).
run_q() {
  _RUN_CMD=$(fmt_cmd "$@")
  printf '+ %s\n' "$_RUN_CMD"
  if [[ $DRY_RUN == 1 ]]; then
    return 0
  fi
  "$@" >/dev/null
}

# exists CMD...: run a describe command quietly. 0 = found, 1 = not found; any other failure
# (permission denied, no network, bad flag) stops the script instead of being taken for "absent".
exists() {
  if [[ $DRY_RUN == 1 ]]; then
    printf '? %s  (dry-run: not checked, assumed %s)\n' "$(fmt_cmd "$@")" "$DRY_RUN_ASSUME"
    [[ $DRY_RUN_ASSUME == present ]]
    return
  fi
  local err
  if err=$("$@" 2>&1 >/dev/null); then
    return 0
  fi
  if grep -qiE 'NOT_FOUND|not found|was not found|does not exist|404' <<<"$err"; then
    return 1
  fi
  die "could not check whether a resource exists: $(fmt_cmd "$@"): $err"
}

# read_value CMD...: run a read-only gcloud command and print its output; with --dry-run print
# the placeholder in $DRY_VALUE instead of calling anything.
read_value() {
  if [[ $DRY_RUN == 1 ]]; then
    printf '%s' "${DRY_VALUE:-}"
    return 0
  fi
  "$@"
}

# has_binding KIND RESOURCE MEMBER ROLE [EXTRA_FLAGS...]: is ROLE already granted to MEMBER on the
# resource? KIND is the gcloud command group, e.g. "pubsub topics" or "storage buckets".
has_binding() {
  local kind=$1 resource=$2 member=$3 role=$4
  shift 4
  local -a group cmd
  read -r -a group <<<"$kind"
  cmd=("$GCLOUD" "${group[@]}" get-iam-policy "$resource" "$@"
    --flatten='bindings[].members' --format='csv[no-heading](bindings.role,bindings.members)')
  if [[ $DRY_RUN == 1 ]]; then
    printf '? %s  (dry-run: not checked, assumed %s)\n' "$(fmt_cmd "${cmd[@]}")" "$DRY_RUN_ASSUME"
    [[ $DRY_RUN_ASSUME == present ]]
    return
  fi
  local policy
  policy=$("${cmd[@]}") || die "could not read the IAM policy of $resource"
  grep -qxF "${role},${member}" <<<"$policy"
}

# grant KIND RESOURCE MEMBER ROLE [EXTRA_FLAGS...]: add an IAM binding on one resource (never on the
# project) unless it is already there. EXTRA_FLAGS go to both get-iam-policy and the add call
# (e.g. --project, --region); --condition=... is passed via GRANT_CONDITION.
grant() {
  local kind=$1 resource=$2 member=$3 role=$4
  shift 4
  local -a group cond=()
  read -r -a group <<<"$kind"
  case $role in
    roles/owner | roles/editor | roles/viewer) die "refusing to grant basic role $role" ;;
  esac
  if [[ -n ${GRANT_CONDITION:-} ]]; then
    cond=("--condition=${GRANT_CONDITION}")
  fi
  if has_binding "$kind" "$resource" "$member" "$role" "$@"; then
    unchanged "$role for $member on $resource"
  else
    run_q "$GCLOUD" "${group[@]}" add-iam-policy-binding "$resource" "$@" \
      "--member=${member}" "--role=${role}" "${cond[@]}" --quiet
  fi
}

# load_config: read $CONFIG_FILE (shell KEY=VALUE lines) and derive the names the scripts use.
# shellcheck disable=SC2034  # the derived names are used by the scripts that source this file
load_config() {
  [[ -f $CONFIG_FILE ]] ||
    die "config file $CONFIG_FILE not found: copy infra/config.env.example to infra/config.env and edit it, or pass --config FILE"
  set -a
  # shellcheck source=/dev/null
  source "$CONFIG_FILE"
  set +a
  local v
  # The VM's zone is its own setting (Binance sees the VM's address); ZONE is its old name.
  VM_ZONE="${VM_ZONE:-${ZONE:-}}"
  for v in PROJECT REGION VM_ZONE BUCKET TOPIC DEAD_LETTER_TOPIC DEAD_LETTER_SUBSCRIPTION \
    PUSH_SUBSCRIPTION FUNCTION_NAME VM_NAME INTERVALS STREAMER_SA FUNCTION_SA PUSH_SA; do
    [[ -n ${!v:-} ]] || die "$v is not set in $CONFIG_FILE"
  done
  load_markets
  VM_REGION="${VM_REGION:-${VM_ZONE%-*}}"
  [[ $VM_ZONE == "$VM_REGION"-* ]] || die "VM_ZONE $VM_ZONE is not in VM_REGION $VM_REGION"
  # Defaults as in klinelake/config.py (tests/infra checks they agree).
  BINANCE_REST_URL="${BINANCE_REST_URL:-https://api.binance.com}"
  BINANCE_WS_URL="${BINANCE_WS_URL:-wss://stream.binance.com:9443}"
  ADDRESS_NAME="${ADDRESS_NAME:-${VM_NAME}-ip}"
  MACHINE_TYPE="${MACHINE_TYPE:-e2-micro}"
  IMAGE_FAMILY="${IMAGE_FAMILY:-debian-12}"
  IMAGE_PROJECT="${IMAGE_PROJECT:-debian-cloud}"
  BOOT_DISK_SIZE="${BOOT_DISK_SIZE:-10GB}"
  FUNCTION_RUNTIME="${FUNCTION_RUNTIME:-python311}"
  FUNCTION_MEMORY="${FUNCTION_MEMORY:-512Mi}"
  FUNCTION_TIMEOUT="${FUNCTION_TIMEOUT:-300s}"
  FUNCTION_MAX_INSTANCES="${FUNCTION_MAX_INSTANCES:-10}"
  FUNCTION_INGRESS="${FUNCTION_INGRESS:-internal-only}"
  PUSH_ACK_DEADLINE="${PUSH_ACK_DEADLINE:-300}"
  MIN_RETRY_DELAY="${MIN_RETRY_DELAY:-10s}"
  MAX_RETRY_DELAY="${MAX_RETRY_DELAY:-600s}"
  MAX_DELIVERY_ATTEMPTS="${MAX_DELIVERY_ATTEMPTS:-10}"
  DEAD_LETTER_RETENTION="${DEAD_LETTER_RETENTION:-7d}"
  GRANT_PUBSUB_TOKEN_CREATOR="${GRANT_PUBSUB_TOKEN_CREATOR:-true}"
  FRESHNESS_BEHIND="${FRESHNESS_BEHIND:-3}"
  NOTIFICATION_CHANNELS="${NOTIFICATION_CHANNELS:-}"
  WRITES_METRIC="${WRITES_METRIC:-klines_written}"

  TOPIC_PATH="projects/${PROJECT}/topics/${TOPIC}"
  DEAD_LETTER_TOPIC_PATH="projects/${PROJECT}/topics/${DEAD_LETTER_TOPIC}"
  STREAMER_SA_EMAIL="${STREAMER_SA}@${PROJECT}.iam.gserviceaccount.com"
  FUNCTION_SA_EMAIL="${FUNCTION_SA}@${PROJECT}.iam.gserviceaccount.com"
  PUSH_SA_EMAIL="${PUSH_SA}@${PROJECT}.iam.gserviceaccount.com"
  LAKE_URI="gs://${BUCKET}"
}

# load_markets: MARKETS (default "spot"), one streamer unit streamer@MARKET per entry. Spot reads
# SYMBOLS, INTERVALS, BINANCE_REST_URL, BINANCE_WS_URL; um and cm read the same names suffixed
# with _UM / _CM (SYMBOLS_UM is required, INTERVALS_UM defaults to INTERVALS, the URLs default to
# the market's own hosts, chosen by the streamer). ALL_INTERVALS: the union, for monitoring.sh.
# shellcheck disable=SC2034
load_markets() {
  MARKETS="${MARKETS:-spot}"
  MARKETS="${MARKETS//,/ }"
  local m seen=" " iv
  local -a list
  read -r -a list <<<"$MARKETS"
  ((${#list[@]} > 0)) || die "MARKETS is empty in $CONFIG_FILE: give spot, um and/or cm"
  for m in "${list[@]}"; do
    [[ $m == spot || $m == um || $m == cm ]] ||
      die "MARKETS: unknown market '$m' in $CONFIG_FILE (spot, um or cm; docs/markets.md)"
    [[ $seen != *" $m "* ]] || die "MARKETS: $m is listed twice in $CONFIG_FILE"
    seen+="$m "
    [[ -n $(market_setting SYMBOLS "$m") ]] ||
      die "$(market_var SYMBOLS "$m") is not set in $CONFIG_FILE (MARKETS lists $m)"
  done
  MARKETS="${list[*]}"
  ALL_INTERVALS=$(for m in "${list[@]}"; do
    market_setting INTERVALS "$m" | tr -s ', ' '\n'
    echo
  done | awk 'NF && !seen[$0]++' | paste -sd, -)
}

# market_var NAME MARKET: the config variable holding NAME for MARKET (SYMBOLS, SYMBOLS_UM).
market_var() {
  if [[ $2 == spot ]]; then printf '%s' "$1"; else printf '%s_%s' "$1" "${2^^}"; fi
}

# market_setting NAME MARKET: its value; INTERVALS falls back to the spot (unsuffixed) value.
market_setting() {
  local var
  var=$(market_var "$1" "$2")
  if [[ -n ${!var:-} ]]; then
    printf '%s' "${!var}"
  elif [[ $1 == INTERVALS ]]; then
    printf '%s' "$INTERVALS"
  fi
}

# project_number: from PROJECT_NUMBER in the config, else looked up (placeholder under --dry-run).
project_number() {
  if [[ -n ${PROJECT_NUMBER:-} ]]; then
    printf '%s' "$PROJECT_NUMBER"
    return
  fi
  DRY_VALUE="PROJECT_NUMBER" read_value \
    "$GCLOUD" projects describe "$PROJECT" --format='value(projectNumber)'
}

pubsub_agent() {
  printf 'service-%s@gcp-sa-pubsub.iam.gserviceaccount.com' "$(project_number)"
}

# usage_common: the flags every script takes.
usage_common() {
  cat <<'USAGE'
  --config FILE   configuration (default: infra/config.env; see infra/config.env.example)
  --dry-run       print the exact gcloud commands a first run would issue; contact nothing
  -h, --help      this help
USAGE
}

# parse_args SPEC... -- "$@": the flags every script takes (--config FILE, --dry-run, -h/--help)
# and the script's own, one SPEC each: "--flag=VAR" takes a value (also as --flag=VALUE) into
# VAR; "--flag:VAR=VALUE" is a switch that sets VAR to VALUE. --help prints usage_common and
# then $USAGE (the script's own lines). Variables are set in the caller's scope (a caller's
# `local` works), so the parser's own locals carry a _pa_ prefix.
parse_args() {
  local -a _pa_specs=()
  while [[ $1 != -- ]]; do
    _pa_specs+=("$1")
    shift
  done
  shift
  local _pa_arg _pa_spec _pa_flag _pa_var _pa_taken
  while (($#)); do
    _pa_arg=$1 _pa_taken=0
    case $_pa_arg in
      --config) CONFIG_FILE=$2; shift ;;
      --config=*) CONFIG_FILE=${_pa_arg#*=} ;;
      --dry-run) DRY_RUN=1 ;;
      -h | --help)
        printf 'usage: %s [options]\n' "$0"
        usage_common
        printf '%s' "${USAGE:-}"
        exit 0 ;;
      *)
        for _pa_spec in "${_pa_specs[@]}"; do
          if [[ $_pa_spec == *:* ]]; then # a switch: --flag:VAR=VALUE
            _pa_flag=${_pa_spec%%:*} _pa_var=${_pa_spec#*:}
            if [[ $_pa_arg == "$_pa_flag" ]]; then
              printf -v "${_pa_var%%=*}" '%s' "${_pa_var#*=}"
              _pa_taken=1
            fi
          else # a value: --flag=VAR
            _pa_flag=${_pa_spec%%=*} _pa_var=${_pa_spec#*=}
            if [[ $_pa_arg == "$_pa_flag" ]]; then
              (($# >= 2)) || die "$_pa_flag needs a value"
              printf -v "$_pa_var" '%s' "$2"
              shift
              _pa_taken=1
            elif [[ $_pa_arg == "$_pa_flag"=* ]]; then
              printf -v "$_pa_var" '%s' "${_pa_arg#*=}"
              _pa_taken=1
            fi
          fi
          ((_pa_taken)) && break
        done
        ((_pa_taken)) || die "unknown argument: $_pa_arg" ;;
    esac
    shift
  done
}

# The Python that builds bundles and wheels: $PYTHON, else the repo venv, else python3.
pick_python() {
  if [[ -z $PYTHON ]]; then
    if [[ -x $REPO_ROOT/.venv/bin/python ]]; then
      PYTHON="$REPO_ROOT/.venv/bin/python"
    else
      PYTHON=python3
    fi
  fi
}
