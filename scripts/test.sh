#!/usr/bin/env bash
# The test command of the README: everything it needs, from a fresh Debian machine with the .NET SDK.
#   1. the whole xunit suite (compiler, generator, runtime, engines against the reference), Release;
#   2. the Stories260K engine published with Native AOT: zero trimming/AOT warnings, and greedy output
#      byte-identical to the JIT build's, in f32 and from q8_0 and q4_0 files (the native code generator
#      is not the JIT's: .NET 9's AOT compiler miscompiled the q8_0/q4_0 prefill tile, which no JIT test saw);
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
for weights in f32 q8_0 q4_0; do
  args=(generate --prompt "Once upon a time" --max-tokens 256 --temperature 0)
  if [ "$weights" != f32 ]; then args+=(--weights "$work/$weights.gguf"); fi
  "$native" "${args[@]}" > "$work/aot.txt"
  dotnet run --project models/Stories260K -c Release -- "${args[@]}" > "$work/jit.txt"
  if ! cmp "$work/aot.txt" "$work/jit.txt"; then
    echo "error: Native AOT output ($weights weights) differs from the JIT build's" >&2
    diff "$work/aot.txt" "$work/jit.txt" | head -20 >&2
    exit 1
  fi
  echo "Native AOT output ($weights weights) is byte-identical to the JIT build's ($(wc -c < "$work/aot.txt") bytes)"
  passed=$((passed + 1))
done
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
