#!/usr/bin/env bash
# Validates shoal's GPU path on a real NVIDIA host: discovery, a launched stand-in model server
# on a leased group, what it sees, and its memory read through NVML against its lease.
#
#   deploy/gpu-validate.sh NEED_GIB WEIGHTS_GIB GROUP_SIZES   (e.g. 24 20 1, or 200 180 2)
#
# Needs bin/shoal (make build) and python3 with PyTorch. Writes its records under $OUT.
set -u
need=${1:-24}; weights=${2:-20}; groups=${3:-1}
root=$(pwd); out=${OUT:-/tmp/shoal-gpu-validate}; work=$(mktemp -d)
mkdir -p "$out"
export PYTHONUNBUFFERED=1

{ echo "## shoal gpus"; bin/shoal gpus; echo; echo "## nvidia-smi";
  nvidia-smi --query-gpu=index,uuid,name,memory.total,memory.used --format=csv; } | tee "$out/gpus.txt"

cat > "$work/profiles.yaml" <<EOF
profiles:
  standin:
    command: [python3, $root/deploy/standin/server.py, --port, "{port}", --weights-mib, "$((weights * 1024))", --model-name, "{model}"]
    health_path: /health
    startup_timeout: 300
    variants:
      - {name: need-${need}g, need_gib: $need, group_sizes: [$groups]}
EOF
cat > "$work/config.yaml" <<EOF
max_iterations: 12
llm:
  models:
    - name: standin
      backend: launch
      concurrency: 2
      timeout: 120
      launch: {profile: standin}
evaluator:
  timeout: 30
  cascade_evaluation: false
EOF
E=examples/function_minimization
bin/shoal up --fresh --state-dir "$work/state" --profiles "$work/profiles.yaml" --config "$work/config.yaml" --evaluator $E/evaluator.py \
  --program $E/initial_program.py --output "$out/best" > "$out/up.txt" 2>&1 &
up=$!
: > "$out/samples.txt"
while kill -0 $up 2>/dev/null; do
  { echo "## $(date +%T)"; bin/shoal leases 2>&1;
    echo "# nvidia-smi compute apps (pid, gpu uuid, used MiB)";
    nvidia-smi --query-compute-apps=pid,gpu_uuid,used_memory --format=csv,noheader; echo; } >> "$out/samples.txt"
  sleep 3
done
wait $up; echo "shoal up exit: $?" >> "$out/up.txt"
grep -h '"server"' "$work/state/shoal.log" | grep -m3 -E 'listening|cuda_visible' > "$out/server.txt"
grep -h -m5 -iE 'lease|launch' "$work/state/shoal.log" >> "$out/server.txt"
cp "$work/state/shoal.log" "$out/shoal.log"
tail -3 "$out/up.txt"
