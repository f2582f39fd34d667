#!/usr/bin/env bash
# The NeuroCAAS entry point of the word-stats analysis, in the shape of neurocaas_contrib's
# run_main.sh: arguments are the bucket, the dataset key, the result directory and the config key.
# It marks the dataset's status object IN PROGRESS, fetches the data and config, runs the
# analysis, uploads the results to GROUP/RESULTDIR/process_results/ and marks the status object
# SUCCESS or FAILED with the output lines.
set -u
bucket="$1"; inputpath="$2"; resultdir="$3"; configpath="$4"
here="$(cd "$(dirname "$0")" && pwd)"
s3() { python3 "$here/s3.py" "$@"; }
groupdir="${inputpath%%/inputs/*}"
dataname="$(basename "$inputpath")"
statuskey="$groupdir/$resultdir/logs/DATASET_NAME:${dataname}_STATUS.txt"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

status() {  # status STATE REASON: rewrite the status object, keeping its other fields
  s3 get "$bucket" "$statuskey" "$work/status.json" 2>/dev/null || echo '{}' > "$work/status.json"
  python3 - "$work/status.json" "$1" "$2" "$work/out.txt" "$work/err.txt" <<'PY'
import json, sys
path, state, reason, out, err = sys.argv[1:]
with open(path) as f:
    d = json.load(f)
lines = lambda p: {str(i): l for i, l in enumerate(open(p).read().splitlines())} if __import__("os").path.exists(p) else "pending"
d.update(status=state, reason=[reason], stdout=lines(out), stderr=lines(err))
with open(path, "w") as f:
    json.dump(d, f)
PY
  s3 put "$bucket" "$statuskey" "$work/status.json"
}

status "IN PROGRESS" "NONE"
echo "word-stats: $inputpath with $configpath"
mkdir -p "$work/results"
if s3 get "$bucket" "$inputpath" "$work/input.txt" && s3 get "$bucket" "$configpath" "$work/config.json" \
   && python3 "$here/wordstats.py" "$work/input.txt" "$work/config.json" "$work/results" > "$work/out.txt" 2> "$work/err.txt"; then
  cat "$work/out.txt"
  for f in "$work"/results/*; do
    s3 put "$bucket" "$groupdir/$resultdir/process_results/$(basename "$f")" "$f"
  done
  status "SUCCESS" "0"
  echo "results: s3://$bucket/$groupdir/$resultdir/process_results/"
else
  code=$?
  cat "$work/out.txt" 2>/dev/null
  cat "$work/err.txt" >&2 2>/dev/null
  status "FAILED" "$code"
  exit 1
fi
