#!/usr/bin/env bash
# The README's performance table, reproduced: publishes the Stories260K and Llama110M engines with Native AOT,
# then runs, on this machine:
#   - Llama110M `bench` for f32, bf16, q8_0 and q4_0 random weights (128-token prompt, 128 decode steps, 3
#     repetitions, 2 threads), PASSES times each: decode and prefill tokens/s against the in-run roofline;
#   - Stories260K `bench` (the real checkpoint from the shared folder), 3 runs: decode tokens/s;
#   - Llama110M `bench serve` in process at concurrency 1 (8 requests) and 16 (64 requests), alternating,
#     PASSES times each: generated tokens/s and median time to first token, with the c16/c1 ratios of the medians.
# Usage: bash scripts/measure.sh [PASSES]   (default 2; about 5 minutes per pass on a 2-core machine)
# The figures move with whatever else the machine runs: compare medians, and say when the load was high.
set -euo pipefail
cd "$(dirname "$0")/.."
passes=${1:-2}
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
threads=$(nproc)

for model in Stories260K Llama110M; do
  echo "== publishing $model (Native AOT)" >&2
  dotnet publish "models/$model" -c Release -r linux-x64 > /dev/null
done
llama=models/Llama110M/bin/Release/net10.0/linux-x64/publish/Llama110M
stories=models/Stories260K/bin/Release/net10.0/linux-x64/publish/Stories260K
load() { cut -d' ' -f1 /proc/loadavg; }
median() { sort -g | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }

echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $threads threads, $(date -u '+%Y-%m-%d %H:%M UTC')"
for pass in $(seq "$passes"); do
  for dtype in f32 bf16 q8_0 q4_0; do
    out=$("$llama" bench --random-weights 1 --dtype "$dtype" --prompt-tokens 128 --gen-tokens 128 --repetitions 3 --threads "$threads" 2>&1)
    decode=$(awk '/^ +decode /{print $2 " tokens/s (" $8 " of the roofline)"}' <<< "$out")
    prefill=$(awk '/^ +prefill +[0-9]/{print $2 " tokens/s (" $6 " of the FMA peak)"}' <<< "$out")
    machine=$(grep -oE 'copy [0-9.]+ GB/s|FMA [0-9.]+ GFLOP/s' <<< "$out" | paste -sd, -)
    echo "pass $pass  Llama110M $dtype  decode $decode  prefill $prefill  [$machine, load $(load)]"
  done
done
for run in 1 2 3; do
  decode=$("$stories" bench --prompt-tokens 128 --gen-tokens 256 --repetitions 5 --no-roofline 2>&1 | awk '/^ +decode /{print $2}')
  echo "Stories260K decode $decode tokens/s  [load $(load)]"
done
c1=(); c16=(); t1=(); t16=()
for pass in $(seq "$passes"); do
  for concurrency in 1 16; do
    requests=$([ "$concurrency" = 1 ] && echo 8 || echo 64)
    out=$("$llama" bench serve --random-weights 1 --concurrency "$concurrency" --requests "$requests" --prompt-tokens 128 --gen-tokens 128 2>&1)
    rate=$(awk '/duration/{print $6}' <<< "$out")
    ttft=$(awk '/time to first token/{print $5}' <<< "$out")
    echo "serve c$concurrency  $rate generated tokens/s  TTFT p50 $ttft ms  [load $(load)]"
    if [ "$concurrency" = 1 ]; then c1+=("$rate"); t1+=("$ttft"); else c16+=("$rate"); t16+=("$ttft"); fi
  done
done
m1=$(printf '%s\n' "${c1[@]}" | median); m16=$(printf '%s\n' "${c16[@]}" | median)
n1=$(printf '%s\n' "${t1[@]}" | median); n16=$(printf '%s\n' "${t16[@]}" | median)
awk -v a="$m1" -v b="$m16" -v c="$n1" -v d="$n16" 'BEGIN {printf "serve medians: c1 %.1f, c16 %.1f tokens/s (%.2fx); TTFT p50 c1 %.0f, c16 %.0f ms (%.2fx)\n", a, b, b / a, c, d, d / c}'
