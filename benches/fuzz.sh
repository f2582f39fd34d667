#!/usr/bin/env bash
# Long runs of the fuzz harnesses of tests/integration/fuzz.rs, one after the other, in a release
# build. Writes benches/results/fuzz.md and prints it.
#   bash benches/fuzz.sh [SECONDS]        SECONDS per harness, default 600
#   bash benches/fuzz.sh 120 parser submit   only some harnesses
# Each harness runs with DEVAMI_FUZZ_SECONDS=SECONDS (set DEVAMI_FUZZ_SEED to repeat a run). A
# failing input is minimized and saved in tests/fuzz-regressions/ (see the README there); the
# script then exits with status 1, after writing the report. FUZZ_CARGO_LOCK=FILE runs the build
# under `flock FILE` (for machines where builds share a lock).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"

seconds="${1:-600}"
case "$seconds" in
  '' | *[!0-9.]* | .*) echo "usage: bash benches/fuzz.sh [SECONDS] [HARNESS...]" >&2; exit 2 ;;
esac
shift $(($# > 0 ? 1 : 0))
harnesses=("$@")
[ ${#harnesses[@]} -gt 0 ] || harnesses=(parser blueprint submit transcript)
for h in "${harnesses[@]}"; do
  case "$h" in
    parser | blueprint | submit | transcript) ;;
    *) echo "error: unknown harness \`$h\` (parser, blueprint, submit, transcript)" >&2; exit 2 ;;
  esac
done

build=(cargo test --release --locked --test integration --no-run)
if [ -n "${FUZZ_CARGO_LOCK:-}" ]; then build=(flock "$FUZZ_CARGO_LOCK" "${build[@]}"); fi
echo "building the integration tests (release)"
build_log="$("${build[@]}" 2>&1)" || { echo "$build_log" >&2; exit 1; }
bin="$(printf '%s\n' "$build_log" | grep -o 'target/release/deps/integration-[0-9a-f]*' | tail -n 1)"
[ -x "$bin" ] || { echo "$build_log" >&2; echo "error: the integration test binary was not found" >&2; exit 1; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
rows=""
findings=""
new_findings=0
for h in "${harnesses[@]}"; do
  echo "fuzzing \`$h\` for ${seconds} s"
  log="$work/$h.log"
  set +e
  DEVAMI_FUZZ_SECONDS="$seconds" "$bin" --exact "fuzz::${h}_harness" --nocapture --test-threads 1 >"$log" 2>"$work/$h.err"
  status=$?
  set -e
  summary="$(grep -o 'fuzz-summary .*mode=long.*' "$log" | tail -n 1 || true)"
  field() { printf '%s\n' "$summary" | grep -o "$1=[^ ]*" | head -n 1 | cut -d= -f2; }
  if [ -z "$summary" ]; then
    rows+="| \`$h\` | - | - | - | run failed (status $status): $(tail -n 1 "$work/$h.err" | tr '|' '/') |"$'\n'
    new_findings=$((new_findings + 1))
    continue
  fi
  n="$(field findings)"
  rows+="| \`$h\` | $(field cases) | $(field seconds) s | $(field rate) | $n |"$'\n'
  new_findings=$((new_findings + n))
  while IFS= read -r line; do
    file="$(printf '%s\n' "$line" | sed -n 's/.*file=\([^ ]*\).*/\1/p')"
    reason="$(printf '%s\n' "$line" | sed -n 's/.*reason=//p' | cut -c1-300 | tr '|' '/')"
    findings+="- \`$h\`: \`${file#"$repo"/}\`: $reason"$'\n'
  done < <(grep -o 'fuzz-finding .*' "$log" | sort -u || true)
done

# The saved inputs: a file fails while its bug is open.
set +e
"$bin" --exact fuzz::regressions --test-threads 1 >"$work/replay.log" 2>&1
set -e
known=""
for f in tests/fuzz-regressions/*.json; do
  [ -e "$f" ] || continue
  verdict="passes"
  if grep -q "^$f\$" "$work/replay.log"; then verdict="fails (the bug is open)"; fi
  known+="- \`$f\`: $verdict"$'\n'
done

cores="$(nproc)"
mem="$(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
version="$(grep -m1 '^version' Cargo.toml | cut -d'"' -f2)"
rev="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
git diff --quiet HEAD 2>/dev/null || rev="$rev + uncommitted changes"
mkdir -p benches/results
{
  echo "# devami fuzz runs"
  echo
  echo "Measured $(date -u '+%Y-%m-%d %H:%M') UTC on ${cores} cores, ${mem}, $(uname -sr), devami ${version} (git ${rev}),"
  echo "release build, ${seconds} s per harness (\`bash benches/fuzz.sh ${seconds}\`)."
  echo
  echo "What each harness generates and checks is described at the top of \`tests/integration/fuzz.rs\`."
  echo "Cases include proptest's shrinking runs; a crash or hang restarts the child and counts as a finding."
  echo
  echo "| harness | cases run | duration | cases/s | new findings |"
  echo "| --- | --- | --- | --- | --- |"
  printf '%s' "$rows"
  echo
  echo "## New findings (saved in tests/fuzz-regressions/)"
  echo
  if [ -n "$findings" ]; then printf '%s' "$findings"; else echo "None."; fi
  echo
  echo "## Saved regression inputs (replayed by \`fuzz::regressions\`)"
  echo
  if [ -n "$known" ]; then printf '%s' "$known"; else echo "None."; fi
} >benches/results/fuzz.md
cat benches/results/fuzz.md
[ "$new_findings" -eq 0 ] || exit 1
