#!/usr/bin/env bash
# The test command of the README: everything it needs, from a fresh Debian machine with the .NET SDK.
#   1. the whole xunit suite (compiler, generator, runtime, engines against the reference), Release; then its
#      CPU-dependent tests again at each lower instruction level (AVX-512 without AVX-VNNI, AVX2 with and without
#      it, Vector128 only, no intrinsics), which the runtime's DOTNET_Enable* knobs select;
#   2. the Stories260K engine published with Native AOT: zero trimming/AOT warnings, and greedy output
#      byte-identical to the JIT build's, in f32 and from q8_0 and q4_0 files (the native code generator
#      is not the JIT's: .NET 9's AOT compiler miscompiled the q8_0/q4_0 prefill tile, which no JIT test saw);
#      on an AVX-512 CPU the same again for a build for x86-64-v3 (AVX2) against the JIT with AVX-512 off;
#   3. the official OpenAI JavaScript SDK (npm `openai`, node's test runner) against that binary's `serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
if [ ! -f ../shared/models/stories260K.bin ] && [ -z "${MODELCOMPILER_SHARED:-}" ]; then
  echo "error: ../shared/models/stories260K.bin not found (set MODELCOMPILER_SHARED to the shared folder)" >&2
  exit 2
fi
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1

# The CUDA tests compile every generated kernel with NVRTC (no GPU needed): Debian's libnvrtc11.2 from
# the non-free component. Installed only when missing and when we may (root); otherwise those tests fail
# with a message saying what to install.
if ! ldconfig -p 2>/dev/null | grep -q 'libnvrtc\.so' && [ "$(id -u)" -eq 0 ] && command -v apt-get > /dev/null; then
  echo "== installing libnvrtc11.2 (CUDA 11.8's NVRTC) for the CUDA kernel tests"
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    sed -i 's/^Components: main$/Components: main contrib non-free/' /etc/apt/sources.list.d/debian.sources
  fi
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libnvrtc11.2 > /dev/null
fi

echo "== unit and integration tests"
log=$(mktemp)
set +e
dotnet test ModelCompiler.sln -c Release 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
passed=$(grep -oE 'Passed: +[0-9]+' "$log" | awk '{s += $2} END {print s + 0}')
failed=$(grep -oE 'Failed: +[0-9]+' "$log" | awk '{s += $2} END {print s + 0}')
rm -f "$log"
if [ "$status" -ne 0 ]; then
  echo "$passed passed, $failed failed"
  exit "$status"
fi

echo "== the CPU-dependent tests again at each lower instruction level"
# The run above tests the kernel paths this CPU selects (AVX-512 with AVX-VNNI on the project's machine). Here the
# tests tagged Category=CpuPaths (kernels against naive loops, the engines against the float64 reference, sampling,
# the KV cache) run again with instruction sets disabled in the JIT by the runtime's knobs. .NET 10's names:
# DOTNET_EnableAVX512 covers AVX-512 F/BW/CD/DQ/VL (DOTNET_EnableAVX512F no longer does anything), DOTNET_EnableAVX2=0
# also drops FMA, AVX-VNNI and AVX-512, DOTNET_EnableHWIntrinsic=0 drops every intrinsic. MODELCOMPILER_EXPECT_ISA
# names the level CpuPathTests must find (CpuFeatures.Level), so a knob that stops working fails here instead of
# testing AVX-512 again. A level needs its instructions in this CPU (the flags listed); one it lacks is skipped.
cpu_flags=" $(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | cut -d: -f2 || true) "
has_flags() { for f in "$@"; do [[ "$cpu_flags" == *" $f "* ]] || return 1; done; }
avx512_flags="avx512f avx512bw avx512cd avx512dq avx512vl"
# expected level | knobs | CPU flags needed | which CPUs run these paths
isa_levels=(
  "avx512|DOTNET_EnableAVXVNNI=0 DOTNET_PreferredVectorBitWidth=512|$avx512_flags|AVX-512 without AVX-VNNI (Skylake-X to Ice Lake, Zen 4)"
  "avx2+vnni|DOTNET_EnableAVX512=0|avx2 fma avx_vnni|AVX2 with AVX-VNNI (Alder Lake and later client cores)"
  "avx2|DOTNET_EnableAVX512=0 DOTNET_EnableAVXVNNI=0|avx2 fma|AVX2 (Haswell to Comet Lake, Zen 1-3)"
  "avx2|DOTNET_PreferredVectorBitWidth=256 DOTNET_EnableAVXVNNI=0|$avx512_flags|AVX-512F present, Vector512 off (.NET's default on Skylake-X and Cascade Lake)"
  "portable|DOTNET_EnableAVX2=0|sse4_2|Vector128 only (pre-AVX2 x86; the vector width of ARM64)"
  "scalar|DOTNET_EnableHWIntrinsic=0||no hardware intrinsics"
)
for entry in "${isa_levels[@]}"; do
  IFS='|' read -r level knobs flags what <<< "$entry"
  # shellcheck disable=SC2086 # the flag list is split on purpose
  if ! has_flags $flags; then
    echo "-- $level ($what): skipped, this CPU lacks one of: $flags"
    continue
  fi
  echo "-- $level ($what): $knobs"
  level_log=$(mktemp)
  level_start=$SECONDS
  set +e
  # shellcheck disable=SC2086 # the knobs are separate variables
  env $knobs MODELCOMPILER_EXPECT_ISA="$level" \
    dotnet test tests/ModelCompiler.Tests -c Release --no-build --filter Category=CpuPaths 2>&1 | tee "$level_log"
  level_status=${PIPESTATUS[0]}
  set -e
  level_passed=$(grep -oE 'Passed: +[0-9]+' "$level_log" | awk '{s += $2} END {print s + 0}')
  level_failed=$(grep -oE 'Failed: +[0-9]+' "$level_log" | awk '{s += $2} END {print s + 0}')
  rm -f "$level_log"
  passed=$((passed + level_passed))
  failed=$((failed + level_failed))
  echo "-- $level: $level_passed passed, $level_failed failed in $((SECONDS - level_start)) s"
  if [ "$level_status" -ne 0 ]; then
    echo "$passed passed, $failed failed"
    exit "$level_status"
  fi
  if [ "$level_passed" -lt 100 ]; then
    echo "error: only $level_passed tests ran at $level; the Category=CpuPaths filter has lost its tests" >&2
    exit 1
  fi
done

echo "== Native AOT: publish Stories260K and compare its output with the JIT build"
publish_log=$(mktemp)
dotnet publish models/Stories260K -c Release -r linux-x64 2>&1 | tee "$publish_log"
if grep -E ': warning (IL|AOT)[0-9]+' "$publish_log"; then
  echo "error: the Native AOT publish has trimming/AOT warnings (above)" >&2
  exit 1
fi
rm -f "$publish_log"
native="$root/models/Stories260K/bin/Release/net10.0/linux-x64/publish/Stories260K"
work=$(mktemp -d)
"$native" quantize --to q8_0 --out "$work/q8_0.gguf" > /dev/null
"$native" quantize --to q4_0 --out "$work/q4_0.gguf" > /dev/null
# compare_with_jit BINARY WHAT [VAR=VALUE ...]: BINARY's greedy output for f32, q8_0 and q4_0 weights must equal the
# JIT build's, the JIT run with the given environment (which selects its instruction level).
compare_with_jit() {
  local binary=$1 what=$2
  shift 2
  for weights in f32 q8_0 q4_0; do
    args=(generate --prompt "Once upon a time" --max-tokens 256 --temperature 0)
    if [ "$weights" != f32 ]; then args+=(--weights "$work/$weights.gguf"); fi
    "$binary" "${args[@]}" > "$work/aot.txt"
    env "$@" dotnet run --project models/Stories260K -c Release -- "${args[@]}" > "$work/jit.txt"
    if ! cmp "$work/aot.txt" "$work/jit.txt"; then
      echo "error: $what output ($weights weights) differs from the JIT build's" >&2
      diff "$work/aot.txt" "$work/jit.txt" | head -20 >&2
      exit 1
    fi
    echo "$what output ($weights weights) is byte-identical to the JIT build's ($(wc -c < "$work/aot.txt") bytes)"
    passed=$((passed + 1))
  done
}
compare_with_jit "$native" "Native AOT"
# The AVX2 paths natively too, where this CPU has more than AVX2 (the binary above then never runs them): a build
# for x86-64-v3 against the JIT with AVX-512 off. Its native code is the AOT compiler's, not the JIT's.
if grep -qw avx512f /proc/cpuinfo && grep -qw avx2 /proc/cpuinfo && grep -qw fma /proc/cpuinfo; then
  dotnet publish models/Stories260K -c Release -r linux-x64 -p:IlcInstructionSet=x86-64-v3 -o "$work/v3" > /dev/null
  compare_with_jit "$work/v3/Stories260K" "Native AOT for x86-64-v3 (against the JIT without AVX-512)" DOTNET_EnableAVX512=0
fi
rm -rf "$work"

echo "== end to end: the official OpenAI JavaScript SDK against the Native AOT engine's serve"
# The native binary published above serves on a free loopback port; node's test runner drives the SDK.
(cd tests/e2e-openai-js && timeout 300 npm ci --no-audit --no-fund --loglevel=error)
port=$(node -e "const s = require('net').createServer(); s.listen(0, '127.0.0.1', () => { console.log(s.address().port); s.close(); })")
api_key="e2e-$RANDOM$RANDOM"
server_log=$(mktemp)
"$native" serve --host 127.0.0.1 --port "$port" --api-key "$api_key" 2> "$server_log" &
server_pid=$!
stop_server() { kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; }
trap stop_server EXIT
ready=0
for _ in $(seq 1 120); do
  if ! kill -0 "$server_pid" 2>/dev/null; then break; fi
  if node -e "fetch('http://127.0.0.1:$port/health').then(r => process.exit(r.ok ? 0 : 1), () => process.exit(1))"; then ready=1; break; fi
  sleep 0.5
done
if [ "$ready" -ne 1 ]; then
  echo "error: the server did not become healthy on port $port; its log:" >&2
  cat "$server_log" >&2
  exit 1
fi
e2e_log=$(mktemp)
set +e
(cd tests/e2e-openai-js && MC_BASE_URL="http://127.0.0.1:$port/v1" MC_API_KEY="$api_key" \
  timeout 300 node --test --test-concurrency=1 openai.test.mjs) 2>&1 | tee "$e2e_log"
e2e_status=${PIPESTATUS[0]}
set -e
stop_server
trap - EXIT
e2e_passed=$(grep -oE '^# pass [0-9]+' "$e2e_log" | awk '{print $3}' | tail -1)
e2e_failed=$(grep -oE '^# fail [0-9]+' "$e2e_log" | awk '{print $3}' | tail -1)
rm -f "$e2e_log" "$server_log"
passed=$((passed + ${e2e_passed:-0}))
failed=$((failed + ${e2e_failed:-0}))
if [ "$e2e_status" -ne 0 ]; then
  echo "$passed passed, $failed failed"
  exit "$e2e_status"
fi
echo "$passed passed, $failed failed"
