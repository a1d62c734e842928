#!/usr/bin/env bash
# Launches an icl_ft binary on a Cloud TPU VM (single host or pod) with gcloud.
# Run `launch_tpu.sh --help` for usage. `--print` echoes the gcloud commands instead of running them.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: launch_tpu.sh [--print] STEP... [OPTIONS] [-- BINARY_ARGS...]

Steps (run in the order given):
  create     create the TPU VM (add --spot for a spot VM, --queued to go through a queued resource)
  copy       sync this checkout's code to ~/icl_ft on every worker (git archive of HEAD, or --repo URL
             to fetch instead): the top-level entries the repository ships are replaced, anything
             else there (data/, results/, runs) is kept
  install    on every worker: uv (astral.sh), a fresh ~/venv on Python PYTHON (the package needs
             >= 3.11; the TPU images ship 3.10, uv fetches it), jax[tpu] and the package (-e ~/icl_ft)
  run        start BINARY with --config=CONFIG on every worker (--worker=all) in the background
             (nohup; returns at once), logging to a new file per run on each worker,
             ~/icl_ft-logs/<UTC time>-<pid>-<binary>.log (the path is printed; ~/icl_ft-logs/latest.log
             links to the newest)
  logs       follow worker 0's newest log (~/icl_ft-logs/latest.log)
  delete     delete the TPU VM (and its queued resource)
  all        create copy install run logs

Options (each also read from the environment variable in brackets):
  --name NAME               TPU VM name                         [TPU_NAME]         (required)
  --zone ZONE               e.g. us-central2-b                  [TPU_ZONE]         (required)
  --project PROJECT         GCP project id                      [TPU_PROJECT]      (required)
  --accelerator-type TYPE   v4-N, v5litepod-N (or v5e-N), v5p-N, v6e-N, e.g. v5p-32
                                                                [TPU_TYPE]         (create)
  --version VERSION         TPU software (runtime) version      [TPU_VERSION]
                            (default by generation, cloud.google.com/tpu/docs/runtimes: v4
                             tpu-ubuntu2204-base, v5e v2-alpha-tpuv5-lite, v5p v2-alpha-tpuv5,
                             v6e v2-alpha-tpuv6e; v5e-N is passed to gcloud as v5litepod-N)
  --spot                    create a spot VM                    [TPU_SPOT=1]
  --queued                  create through a queued resource    [TPU_QUEUED=1]
  --repo URL                clone URL instead of copying HEAD   [ICL_FT_REPO]
  --ref REF                 branch/tag/commit with --repo       [ICL_FT_REF]       (default: main)
  --python VERSION          Python of ~/venv (install)          [ICL_FT_PYTHON]    (default: 3.12)
  --binary NAME             icl-ft-study, icl-ft-train, icl-ft-eval, icl-ft-augment, icl-ft-data
                                                                [ICL_FT_BINARY]    (default: icl-ft-study)
  --config PATH             config file[:arg], relative to the repository root; the file must
                            exist in this checkout (and be committed when `copy` ships HEAD)
                                                                [ICL_FT_CONFIG]    (required for run)
  --print                   print the gcloud commands, one per line, shell-quoted; run nothing
  -h, --help                this text

Everything after `--` is passed to the binary, e.g. `-- --config.model.checkpoint=gs://bucket/ckpt`.
On every worker the binary runs with ICL_FT_MULTIHOST=1, which makes it call jax.distributed.initialize()
(on TPU VMs JAX finds the coordinator and the process ids itself).

Example (finetune Gemma 2 2B on a 4-worker v5p-32 pod; paths as mounted on the workers):
  ./launch_tpu.sh all --name icl-ft --zone us-east5-a --project my-proj --accelerator-type v5p-32 \
      --spot --binary icl-ft-train --config configs/gemma.py:train,gemma2_2b,v5p-32,semantic_structure \
      -- --config.model.checkpoint=/home/me/gcs/gemma/gemma2-2b \
         --config.model.tokenizer=/home/me/gcs/gemma/tokenizer.model \
         --config.workdir=/home/me/gcs/runs/gemma2_2b/semantic_structure
Walkthrough (project, bucket, checkpoints, the whole study): docs/running-on-tpu.md.
EOF
}

die() { echo "launch_tpu.sh: error: $*" >&2; exit 2; }

PRINT=0
STEPS=()
NAME=${TPU_NAME:-}
ZONE=${TPU_ZONE:-}
PROJECT=${TPU_PROJECT:-}
TYPE=${TPU_TYPE:-}
VERSION=${TPU_VERSION:-}
SPOT=${TPU_SPOT:-0}
QUEUED=${TPU_QUEUED:-0}
REPO=${ICL_FT_REPO:-}
REF=${ICL_FT_REF:-main}
PYTHON=${ICL_FT_PYTHON:-3.12}
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
    --python) need_value "$@"; PYTHON=$2; shift ;;
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

# The gcloud accelerator type and the TPU software (runtime) version of its generation
# (cloud.google.com/tpu/docs/runtimes; icl_ft/scale/topologies.py RUNTIME_VERSIONS holds the same table).
if [[ -n "$TYPE" ]]; then
  [[ $TYPE =~ ^(v[0-9][a-z0-9]*)-([0-9]+)$ ]] \
    || die "unknown accelerator type '$TYPE' (v4-N, v5litepod-N or v5e-N, v5p-N, v6e-N)"
  generation=${BASH_REMATCH[1]}
  case "$generation" in
    v4) default_version=tpu-ubuntu2204-base ;;
    v5e|v5litepod) generation=v5litepod; default_version=v2-alpha-tpuv5-lite ;;
    v5p) default_version=v2-alpha-tpuv5 ;;
    v6e) default_version=v2-alpha-tpuv6e ;;
    *) die "unknown accelerator type '$TYPE' (v4-N, v5litepod-N or v5e-N, v5p-N, v6e-N)" ;;
  esac
  TYPE=$generation-${BASH_REMATCH[2]}
  VERSION=${VERSION:-$default_version}
fi

# The config is read on the workers from the copied code: refuse a missing file before anything runs.
if [[ -n "$CONFIG" ]]; then
  config_file=${CONFIG%%:*}
  [[ -f "$ROOT/$config_file" ]] || die "config file '$config_file' not found in $ROOT"
  if [[ -z "$REPO" && " ${STEPS[*]} " == *" copy "* ]] \
      && ! git -C "$ROOT" cat-file -e "HEAD:$config_file" 2> /dev/null; then
    die "config file '$config_file' is not committed: copy ships HEAD (git archive); commit it first"
  fi
fi
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

# Syncs the code only: ~/icl_ft also holds what the workers made there (data/ from icl-ft-data,
# results, runs), which a fresh copy must not delete.
step_copy() {
  if [[ -n "$REPO" ]]; then
    # A git checkout in place: tracked files follow REF, untracked and ignored ones (data/) stay.
    local ref
    ref=$(printf '%q' "$REF")
    ssh_all "set -e; mkdir -p ~/icl_ft; cd ~/icl_ft; [ -d .git ] || git init --quiet; git fetch --quiet --tags --force $(printf '%q' "$REPO") '+refs/heads/*:refs/remotes/origin/*'; git checkout --quiet --force --detach \$(git rev-parse --verify --quiet origin/$ref || echo $ref)"
  else
    local archive=/tmp/icl_ft-$NAME.tar.gz
    run git -C "$ROOT" archive --format=tar.gz -o "$archive" HEAD
    run gcloud compute tpus tpu-vm scp "$archive" "$NAME:~/icl_ft.tar.gz" "${LOCATION[@]}" --worker=all
    # Replace each top-level entry the archive ships (so files deleted from the code go), keep the rest.
    ssh_all "set -e; mkdir -p ~/icl_ft; cd ~/icl_ft; tar -tzf ~/icl_ft.tar.gz | cut -d/ -f1 | sort -u | while read -r top; do if [ -n \"\$top\" ] && [ \"\$top\" != . ]; then rm -rf -- \"./\$top\"; fi; done; tar -xzf ~/icl_ft.tar.gz"
  fi
}

step_install() {
  # uv provides the Python the package needs (>= 3.11) whatever the image has; ~/venv is rebuilt.
  ssh_all "set -e; export PATH=\$HOME/.local/bin:\$PATH; command -v uv > /dev/null || curl -LsSf https://astral.sh/uv/install.sh | sh; rm -rf ~/venv; uv venv --quiet --seed --python $(printf '%q' "$PYTHON") ~/venv; uv pip install --quiet --python ~/venv/bin/python -U 'jax[tpu]' -e ~/icl_ft"
}

step_run() {
  local cmd arg log
  # One log per run, never overwritten (noclobber); the name is fixed here so every worker uses it.
  log=icl_ft-logs/$(date -u +%Y%m%d-%H%M%S)-$$-$BINARY.log
  cmd="mkdir -p ~/icl_ft-logs && cd ~/icl_ft && . ~/venv/bin/activate && set -C && ln -sfn ~/$log ~/icl_ft-logs/latest.log && { ICL_FT_MULTIHOST=1 nohup $BINARY --config=$(printf '%q' "$CONFIG")"
  for arg in "${BINARY_ARGS[@]}"; do cmd+=" $(printf '%q' "$arg")"; done
  # Only the binary goes to the background, with every stream redirected: ssh returns at once.
  cmd+=" > ~/$log 2>&1 < /dev/null & }"
  echo "launch_tpu.sh: run: log in ~/$log on every worker (~/icl_ft-logs/latest.log)" >&2
  ssh_all "$cmd"
}

step_logs() {
  run gcloud compute tpus tpu-vm ssh "$NAME" "${LOCATION[@]}" --worker=0 \
    --command="tail -n +1 -F ~/icl_ft-logs/latest.log"
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
