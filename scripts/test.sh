#!/usr/bin/env bash
# The test command of the README: everything it needs, from a fresh Debian machine with the .NET SDK.
#   1. the whole xunit suite (compiler, generator, runtime, engines against the reference), Release;
#   2. the Stories260K engine published with Native AOT: zero trimming/AOT warnings, and greedy output
#      byte-identical to the JIT build's.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
if [ ! -f ../shared/models/stories260K.bin ] && [ -z "${MODELCOMPILER_SHARED:-}" ]; then
  echo "error: ../shared/models/stories260K.bin not found (set MODELCOMPILER_SHARED to the shared folder)" >&2
  exit 2
fi
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1

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
dotnet publish models/Stories260K -c Release -f net9.0 -r linux-x64 2>&1 | tee "$publish_log"
if grep -E ': warning (IL|AOT)[0-9]+' "$publish_log"; then
  echo "error: the Native AOT publish has trimming/AOT warnings (above)" >&2
  exit 1
fi
rm -f "$publish_log"
args=(generate --prompt "Once upon a time" --max-tokens 256 --temperature 0)
native="$root/models/Stories260K/bin/Release/net9.0/linux-x64/publish/Stories260K"
"$native" "${args[@]}" > /tmp/mc-aot.txt
dotnet run --project models/Stories260K -c Release -- "${args[@]}" > /tmp/mc-jit.txt
if ! cmp /tmp/mc-aot.txt /tmp/mc-jit.txt; then
  echo "error: Native AOT output differs from the JIT build's" >&2
  diff /tmp/mc-aot.txt /tmp/mc-jit.txt | head -20 >&2
  exit 1
fi
echo "Native AOT output is byte-identical to the JIT build's ($(wc -c < /tmp/mc-aot.txt) bytes)"
passed=$((passed + 1))
echo "$passed passed, $failed failed"
