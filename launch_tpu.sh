#!/usr/bin/env bash
# Launches an icl_ft binary on a Cloud TPU VM (single host or pod) with gcloud.
# Run `launch_tpu.sh --help` for usage. `--print` echoes the gcloud commands instead of running them.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: launch_tpu.sh [--print] STEP... [OPTIONS] [-- BINARY_ARGS...]

Steps (run in the order given):
  create     create the TPU VM (add --spot for a spot VM, --queued to go through a queued resource)
  copy       copy this checkout to every worker (git archive of HEAD, or --repo URL to clone instead)
  install    create ~/venv on every worker and install jax[tpu] and the package
  run        start BINARY with --config=CONFIG on every worker (--worker=all), logging to ~/icl_ft.log
  logs       follow worker 0's log
  delete     delete the TPU VM (and its queued resource)
  all        create copy install run logs

Options (each also read from the environment variable in brackets):
  --name NAME               TPU VM name                         [TPU_NAME]         (required)
  --zone ZONE               e.g. us-central2-b                  [TPU_ZONE]         (required)
  --project PROJECT         GCP project id                      [TPU_PROJECT]      (required)
  --accelerator-type TYPE   e.g. v4-8, v5litepod-8, v5p-32      [TPU_TYPE]         (create)
  --version VERSION         TPU software version                [TPU_VERSION]      (default: tpu-ubuntu2204-base)
  --spot                    create a spot VM                    [TPU_SPOT=1]
  --queued                  create through a queued resource    [TPU_QUEUED=1]
  --repo URL                clone URL instead of copying HEAD   [ICL_FT_REPO]
  --ref REF                 branch/tag/commit with --repo       [ICL_FT_REF]       (default: main)
  --binary NAME             icl-ft-study, icl-ft-train, icl-ft-eval, icl-ft-augment, icl-ft-data
                                                                [ICL_FT_BINARY]    (default: icl-ft-study)
  --config PATH             config file[:arg], relative to the repository root
                                                                [ICL_FT_CONFIG]    (required for run)
  --print                   print the gcloud commands, one per line, shell-quoted; run nothing
  -h, --help                this text

Everything after `--` is passed to the binary, e.g. `-- --config.model.checkpoint=gs://bucket/ckpt`.
On every worker the binary runs with ICL_FT_MULTIHOST=1, which makes it call jax.distributed.initialize()
(on TPU VMs JAX finds the coordinator and the process ids itself).

Example (a 4-worker v5p-32 pod):
  ./launch_tpu.sh all --name icl-ft --zone us-east5-a --project my-proj --accelerator-type v5p-32 \
      --spot --config configs/study.py:gemma2_2b -- --config.model.checkpoint=gs://my-bucket/gemma2-2b
EOF
}

die() { echo "launch_tpu.sh: error: $*" >&2; exit 2; }

PRINT=0
STEPS=()
NAME=${TPU_NAME:-}
ZONE=${TPU_ZONE:-}
PROJECT=${TPU_PROJECT:-}
TYPE=${TPU_TYPE:-}
VERSION=${TPU_VERSION:-tpu-ubuntu2204-base}
SPOT=${TPU_SPOT:-0}
QUEUED=${TPU_QUEUED:-0}
REPO=${ICL_FT_REPO:-}
REF=${ICL_FT_REF:-main}
BINARY=${ICL_FT_BINARY:-icl-ft-study}
CONFIG=${ICL_FT_CONFIG:-}
BINARY_ARGS=()

need_value() { [[ $# -ge 2 && -n "$2" ]] || die "$1 needs a value"; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --print) PRINT=1 ;;
    --spot) SPOT=1 ;;
    --queued) QUEUED=1 ;;
    --name) need_value "$@"; NAME=$2; shift ;;
    --zone) need_value "$@"; ZONE=$2; shift ;;
    --project) need_value "$@"; PROJECT=$2; shift ;;
    --accelerator-type) need_value "$@"; TYPE=$2; shift ;;
    --version) need_value "$@"; VERSION=$2; shift ;;
    --repo) need_value "$@"; REPO=$2; shift ;;
    --ref) need_value "$@"; REF=$2; shift ;;
    --binary) need_value "$@"; BINARY=$2; shift ;;
    --config) need_value "$@"; CONFIG=$2; shift ;;
    --) shift; BINARY_ARGS=("$@"); break ;;
    create|copy|install|run|logs|delete) STEPS+=("$1") ;;
    all) STEPS+=(create copy install run logs) ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
  shift
done

[[ ${#STEPS[@]} -gt 0 ]] || die "no step given (see --help)"
[[ -n "$NAME" ]] || die "--name (or TPU_NAME) is required"
[[ -n "$ZONE" ]] || die "--zone (or TPU_ZONE) is required"
[[ -n "$PROJECT" ]] || die "--project (or TPU_PROJECT) is required"
case "$BINARY" in
  icl-ft-study|icl-ft-train|icl-ft-eval|icl-ft-augment|icl-ft-data) ;;
  *) die "unknown binary '$BINARY' (icl-ft-study, icl-ft-train, icl-ft-eval, icl-ft-augment, icl-ft-data)" ;;
esac
for step in "${STEPS[@]}"; do
  if [[ $step == create && -z "$TYPE" ]]; then die "create needs --accelerator-type (or TPU_TYPE)"; fi
  if [[ $step == run && -z "$CONFIG" ]]; then die "run needs --config (or ICL_FT_CONFIG)"; fi
done

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LOCATION=(--zone="$ZONE" --project="$PROJECT")

# Runs a command, or prints it shell-quoted on one line with --print.
run() {
  if [[ $PRINT == 1 ]]; then
    local out=() arg
    for arg in "$@"; do out+=("$(printf '%q' "$arg")"); done
    echo "${out[*]}"
  else
    "$@"
  fi
}

ssh_all() { run gcloud compute tpus tpu-vm ssh "$NAME" "${LOCATION[@]}" --worker=all --command="$1"; }

# The VM exists only once its queued resource is ACTIVE: poll until then (or fail on FAILED/SUSPENDED).
wait_for_queued_resource() {
  local describe=(gcloud compute tpus queued-resources describe "$NAME-qr" "${LOCATION[@]}" --format='value(state.state)')
  if [[ $PRINT == 1 ]]; then run "${describe[@]}"; return; fi
  local state
  while true; do
    state=$("${describe[@]}")
    case "$state" in
      ACTIVE) return ;;
      FAILED|SUSPENDED) die "queued resource $NAME-qr is $state" ;;
      *) echo "queued resource $NAME-qr: ${state:-unknown}; waiting" >&2; sleep 60 ;;
    esac
  done
}

step_create() {
  local spot=()
  [[ $SPOT == 1 ]] && spot=(--spot)
  if [[ $QUEUED == 1 ]]; then
    run gcloud compute tpus queued-resources create "$NAME-qr" "${LOCATION[@]}" --node-id="$NAME" \
      --accelerator-type="$TYPE" --runtime-version="$VERSION" "${spot[@]}"
    wait_for_queued_resource
  else
    run gcloud compute tpus tpu-vm create "$NAME" "${LOCATION[@]}" --accelerator-type="$TYPE" \
      --version="$VERSION" "${spot[@]}"
  fi
}

step_copy() {
  if [[ -n "$REPO" ]]; then
    ssh_all "rm -rf ~/icl_ft && git clone --quiet $(printf '%q' "$REPO") ~/icl_ft && git -C ~/icl_ft checkout --quiet $(printf '%q' "$REF")"
  else
    local archive=/tmp/icl_ft-$NAME.tar.gz
    run git -C "$ROOT" archive --format=tar.gz -o "$archive" HEAD
    run gcloud compute tpus tpu-vm scp "$archive" "$NAME:~/icl_ft.tar.gz" "${LOCATION[@]}" --worker=all
    ssh_all "rm -rf ~/icl_ft && mkdir -p ~/icl_ft && tar -xzf ~/icl_ft.tar.gz -C ~/icl_ft"
  fi
}

step_install() {
  ssh_all "python3 -m venv ~/venv && . ~/venv/bin/activate && pip install -q -U pip && pip install -q -U 'jax[tpu]' && pip install -q -e ~/icl_ft"
}

step_run() {
  local cmd arg
  cmd="cd ~/icl_ft && . ~/venv/bin/activate && ICL_FT_MULTIHOST=1 nohup $BINARY --config=$(printf '%q' "$CONFIG")"
  for arg in "${BINARY_ARGS[@]}"; do cmd+=" $(printf '%q' "$arg")"; done
  cmd+=" > ~/icl_ft.log 2>&1 < /dev/null &"
  ssh_all "$cmd"
}

step_logs() {
  run gcloud compute tpus tpu-vm ssh "$NAME" "${LOCATION[@]}" --worker=0 --command="tail -n +1 -f ~/icl_ft.log"
}

step_delete() {
  if [[ $QUEUED == 1 ]]; then
    run gcloud compute tpus queued-resources delete "$NAME-qr" "${LOCATION[@]}" --force --quiet
  else
    run gcloud compute tpus tpu-vm delete "$NAME" "${LOCATION[@]}" --quiet
  fi
}

for step in "${STEPS[@]}"; do
  "step_$step"
done
