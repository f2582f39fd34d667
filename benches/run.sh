#!/usr/bin/env bash
# devami's benchmarks, in one reproducible place. Writes benches/results/latest.md and prints it.
#   bash benches/run.sh
# Measures: startup (`devami run` of a script holding only `help` and `exit`, with hyperfine) and
# the interactive shell's idle memory (RSS of a shell waiting at its prompt in a pseudo-terminal).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"

if ! command -v hyperfine >/dev/null; then
  echo "installing hyperfine (Debian package)"
  if [ "$(id -u)" = 0 ]; then apt-get install -y -qq hyperfine >/dev/null; else sudo apt-get install -y -qq hyperfine >/dev/null; fi
fi

cargo build --release --locked
bin="$repo/target/release/devami"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
"$bin" init bench-blueprint >/dev/null
printf 'help\nexit\n' > help-exit.devami
export DEVAMI_HISTORY="$work/history" DEVAMI_HOME="$work/home"

hyperfine --warmup 5 --runs 100 --export-json startup.json -N \
  "$bin run help-exit.devami" "$bin run --dir bench-blueprint help-exit.devami" >/dev/null
startup=$(python3 - <<'PY'
import json
for r in json.load(open("startup.json"))["results"]:
    print(f"| `{r['command'].split('/')[-1]}` | {r['mean']*1000:.2f} ms ± {r['stddev']*1000:.2f} | {r['min']*1000:.2f} ms | {r['max']*1000:.2f} ms |")
PY
)

idle=$(python3 - "$bin" <<'PY'
import os, pty, sys, time, select
binary = sys.argv[1]
pid, fd = pty.fork()
if pid == 0:
    os.execv(binary, [binary, "bench-blueprint"])
buf = b""
deadline = time.time() + 20
while b"]> " not in buf and time.time() < deadline:
    r, _, _ = select.select([fd], [], [], 0.5)
    if r:
        buf += os.read(fd, 4096)
rss = [l for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS")][0].split()[1]
os.write(fd, b"exit\r")
os.waitpid(pid, 0)
print(f"{int(rss)/1024:.1f} MiB")
PY
)

{
  echo "# devami benchmarks"
  echo
  echo "Measured $(date -u '+%Y-%m-%d %H:%M UTC') on $(nproc) cores, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr), devami $("$bin" --version | cut -d' ' -f2)."
  echo
  echo "## Startup: \`devami run\` of a script holding only \`help\` and \`exit\` (target < 20 ms)"
  echo
  echo "| command | mean | min | max |"
  echo "| --- | --- | --- | --- |"
  echo "$startup"
  echo
  echo "## Idle memory of the interactive shell (target < 30 MB RSS)"
  echo
  echo "$idle"
} > "$repo/benches/results/latest.md"
cat "$repo/benches/results/latest.md"
