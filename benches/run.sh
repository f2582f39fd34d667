#!/usr/bin/env bash
# devami's benchmarks, in one reproducible place. Writes benches/results/latest.md and prints it.
#   bash benches/run.sh
# Measures: startup (`devami run` of a script holding only `help` and `exit`, with hyperfine), the
# interactive shell's idle memory (RSS of a shell waiting at its prompt in a pseudo-terminal),
# snapshots and launches of the local backend, transfers through its embedded S3 endpoint against
# the AWS CLI (a 1 GiB object with devami's peak memory, 1,000 small files against `aws s3 sync`),
# the latency of live job output, how soon a wait notices a change (a local job ending, a moto
# instance turning running), the whole loop on the local backend (the first-image tutorial
# replayed) and the development loop against moto (wall time and API calls per command).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"

if ! command -v hyperfine >/dev/null; then
  echo "installing hyperfine (Debian package)"
  if [ "$(id -u)" = 0 ]; then apt-get install -y -qq hyperfine >/dev/null; else sudo apt-get install -y -qq hyperfine >/dev/null; fi
fi
if [ ! -x /usr/bin/time ]; then
  echo "installing time (Debian package, for peak memory)"
  if [ "$(id -u)" = 0 ]; then apt-get install -y -qq time >/dev/null; else sudo apt-get install -y -qq time >/dev/null; fi
fi

cargo build --release --locked
bin="$repo/target/release/devami"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
"$bin" init bench-blueprint >/dev/null
printf 'help\nexit\n' > help-exit.devami
export DEVAMI_HISTORY="$work/history" DEVAMI_HOME="$work/home"
[ -x "$repo/.venv/bin/aws" ] || { echo "error: run bash tests/run.sh first (it installs awscli into .venv)" >&2; exit 1; }
command -v podman >/dev/null || { echo "error: run bash tests/run.sh first (it installs podman)" >&2; exit 1; }
# Instances launch from the tests' Debian base (no registry here): imported once into the engine,
# and every alias used below resolves to it. devami starts its own Podman service (no DOCKER_HOST).
unset DOCKER_HOST
rootfs="$(bash "$repo/tests/base-image.sh" | tail -n1)"
podman import --change 'LABEL devami.bench=1' "$rootfs" localhost/devami-bench/base >/dev/null
export DEVAMI_IMAGE_UBUNTU22=localhost/devami-bench/base:latest DEVAMI_IMAGE_UBUNTU18=localhost/devami-bench/base:latest
# What the engine holds for this run's homes (labelled with a digest of the home's path) goes at exit.
home_label() { python3 -c 'import sys
h = 0xcbf29ce484222325
for b in sys.argv[1].encode(): h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
print(f"{h:016x}")' "$1"; }
cleanup_engine() {
  for h in "$work/home" "$work/loop/home"; do
    l=$(home_label "$h")
    podman rm -f -t 0 $(podman ps -aq --filter "label=devami.home=$l") >/dev/null 2>&1 || true
    for _ in 1 2 3; do podman rmi -f $(podman images -q --filter "label=devami.home=$l") >/dev/null 2>&1 || true; done
  done
  podman rmi -f localhost/devami-bench/base >/dev/null 2>&1 || true
  # The Podman services devami started for this run's homes (they would exit when idle).
  pkill -f "podman system service .*$work" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup_engine EXIT

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


# ---- local backend: images and launches of containers, against podman itself -----------------
# Two instances each write 1 GiB of different random data in 10,000 files outside /home (a layer
# already stored would let the engine skip the write). create_devami commits the first, `podman
# commit` the second, each from a cold page cache where this machine lets us drop it (root), so
# neither reads what the other just read; `cp -a` copies the tree inside the first instance.
# Then a launch of the new image as a whole devami process, against `podman run -d` of it.
"$bin" init snap-a >/dev/null; "$bin" init snap-b >/dev/null; "$bin" init snap-c >/dev/null
write_tree='exec sudo python3 -c "import os; os.makedirs(\"/opt/tree\", exist_ok=True); [open(f\"/opt/tree/f{i:05d}\", \"wb\").write(os.urandom(107374)) for i in range(10000)]"'
"$bin" snap-a -c 'launch ubuntu22' >/dev/null; "$bin" snap-a -c "$write_tree" >/dev/null
"$bin" snap-c -c 'launch ubuntu22' >/dev/null; "$bin" snap-c -c "$write_tree" >/dev/null
inst_c=$(python3 -c 'import json;print(json.load(open("snap-c/.devami/state.json"))["instance"])')
cold() { sync; if [ -w /proc/sys/vm/drop_caches ]; then echo 3 > /proc/sys/vm/drop_caches; fi; }
cache_note=$([ -w /proc/sys/vm/drop_caches ] && echo "page cache dropped before each" || echo "page cache not dropped (not root)")
cold
t0=$(date +%s.%N); "$bin" snap-a -c 'create_devami big-tree' >/dev/null; t1=$(date +%s.%N)
image=$(python3 -c 'import json;print(json.load(open("snap-a/.devami/state.json"))["images"][-1]["id"])')
engine_image=$(python3 -c "import json,os;print(json.load(open(os.environ['DEVAMI_HOME']+'/images/$image/image.json'))['engine_image'])")
cold
t4=$(date +%s.%N); podman commit --pause=false "devami-$inst_c" localhost/devami-bench/commit >/dev/null; t5=$(date +%s.%N)
"$bin" snap-c -c 'terminate --force' >/dev/null; podman rmi localhost/devami-bench/commit >/dev/null
t2=$(date +%s.%N); "$bin" snap-b -c "launch $image" >/dev/null; t3=$(date +%s.%N)
"$bin" snap-b -c 'exec test -f /opt/tree/f09999' >/dev/null
# The same engine configuration as the Podman service devami started (runc, ulimits).
export CONTAINERS_CONF="$DEVAMI_HOME/engine/containers.conf"
t6=$(date +%s.%N); podman run -d --init --network host "$engine_image" sleep infinity > run-d.id; t7=$(date +%s.%N)
podman rm -f -t 0 "$(cat run-d.id)" >/dev/null
cold
t8=$(date +%s.%N); "$bin" snap-a -c 'exec "sudo cp -a /opt/tree /opt/tree-copy && sync"' >/dev/null; t9=$(date +%s.%N)
snapshot=$(python3 -c "print(f'{($t1-$t0)*1000:.0f}')"); launch=$(python3 -c "print(f'{($t3-$t2)*1000:.0f}')")
commit=$(python3 -c "print(f'{($t5-$t4)*1000:.0f}')"); rund=$(python3 -c "print(f'{($t7-$t6)*1000:.0f}')")
cpa=$(python3 -c "print(f'{($t9-$t8)*1000:.0f}')")
"$bin" snap-b -c 'terminate --force' >/dev/null

# ---- local backend: 1 GiB through the embedded S3 endpoint, against aws s3 cp ---------------
aws="$repo/.venv/bin/aws"
head -c 1073741824 /dev/urandom > big.bin
# Peak memory (max RSS, KiB) of devami itself, from GNU time.
t0=$(date +%s.%N); /usr/bin/time -f %M -o up.rss "$bin" snap-a -c 'upload big.bin bench/big.bin' >/dev/null; t1=$(date +%s.%N)
t2=$(date +%s.%N); /usr/bin/time -f %M -o down.rss "$bin" snap-a -c 'download bench/big.bin got.bin' >/dev/null; t3=$(date +%s.%N)
cmp -s big.bin got.bin || { echo "error: the downloaded object differs" >&2; exit 1; }
mb() { python3 -c "print(f'{$(tail -n1 "$1") * 1024 / 1e6:.0f} MB')"; }
uprss=$(mb up.rss); downrss=$(mb down.rss)
port=$(python3 -c 'import json,os;print(json.load(open(os.environ["DEVAMI_HOME"]+"/run/s3.json"))["port"])')
AWS_ACCESS_KEY_ID=$(python3 -c 'import json,os;print(json.load(open(os.environ["DEVAMI_HOME"]+"/run/s3-keys.json"))["access_key"])')
AWS_SECRET_ACCESS_KEY=$(python3 -c 'import json,os;print(json.load(open(os.environ["DEVAMI_HOME"]+"/run/s3-keys.json"))["secret_key"])')
export AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_DEFAULT_REGION=us-east-1
t4=$(date +%s.%N); "$aws" --endpoint-url "http://127.0.0.1:$port" s3 cp --quiet big.bin s3://snap-a/bench/cli.bin; t5=$(date +%s.%N)
t6=$(date +%s.%N); "$aws" --endpoint-url "http://127.0.0.1:$port" s3 cp --quiet s3://snap-a/bench/cli.bin cli.bin; t7=$(date +%s.%N)
ms() { python3 -c "print(f'{($2-$1)*1000:.0f}')"; }
up=$(ms $t0 $t1); down=$(ms $t2 $t3); cliup=$(ms $t4 $t5); clidown=$(ms $t6 $t7)
rm -f big.bin got.bin cli.bin

# ---- local backend: 1,000 small files through the same endpoint, against aws s3 sync ----------
# Median of 3 rounds; each round uploads to a new prefix and downloads into a new folder.
smallsize=$(python3 - <<'PY'
import os
total = 0
for i in range(1000):
    d = f"small/d{i % 10}"
    os.makedirs(d, exist_ok=True)
    with open(f"{d}/f{i:04d}.dat", "wb") as f:
        total += f.write(os.urandom(512 + i * 3))
print(f"{total / 1048576:.1f} MiB")
PY
)
rounds_up=(); rounds_down=(); rounds_cliup=(); rounds_clidown=()
for round in 1 2 3; do
  t0=$(date +%s.%N); "$bin" snap-a -c "upload small tree/dv$round" >/dev/null; t1=$(date +%s.%N)
  t2=$(date +%s.%N); "$bin" snap-a -c "download tree/dv$round small-dv$round" >/dev/null; t3=$(date +%s.%N)
  t4=$(date +%s.%N); "$aws" --endpoint-url "http://127.0.0.1:$port" s3 sync --quiet small "s3://snap-a/tree/cli$round"; t5=$(date +%s.%N)
  t6=$(date +%s.%N); "$aws" --endpoint-url "http://127.0.0.1:$port" s3 sync --quiet "s3://snap-a/tree/cli$round" "small-cli$round"; t7=$(date +%s.%N)
  diff -r small "small-dv$round" >/dev/null || { echo "error: devami's downloaded tree differs" >&2; exit 1; }
  diff -r small "small-cli$round" >/dev/null || { echo "error: aws s3 sync's downloaded tree differs" >&2; exit 1; }
  rounds_up+=("$(ms $t0 $t1)"); rounds_down+=("$(ms $t2 $t3)")
  rounds_cliup+=("$(ms $t4 $t5)"); rounds_clidown+=("$(ms $t6 $t7)")
  rm -rf "small-dv$round" "small-cli$round"
done
median() { printf '%s\n' "$@" | sort -n | sed -n 2p; }
treeup=$(median "${rounds_up[@]}"); treedown=$(median "${rounds_down[@]}")
treecliup=$(median "${rounds_cliup[@]}"); treeclidown=$(median "${rounds_clidown[@]}")
ratio() { python3 -c "print(f'{$2/$1:.1f}x')"; }
rm -rf small

# A blueprint NAME whose job runs COMMAND, with a dataset NAME/d.txt and NAME/submit.json for it.
job_blueprint() {
  "$bin" init "$1" >/dev/null
  python3 - "$1/stack_config_template.json" "$2" <<'PY'
import json, sys
p = sys.argv[1]; d = json.load(open(p))
d["Lambda"]["LambdaConfig"]["COMMAND"] = sys.argv[2] + " # {} {} {} {}"
json.dump(d, open(p, "w"), indent=4)
PY
  echo data > "$1/d.txt"
  printf '{"dataname": "debuggers/inputs/d.txt", "configname": "debuggers/inputs/d.txt", "timestamp": "1"}' > "$1/submit.json"
}

# ---- local backend: from a job printing a line to job_output showing it ----------------------
job_blueprint latency 'sleep 1; for i in 1 2 3 4 5; do echo "mark $i $(date +%s.%N)"; sleep 1; done'
"$bin" latency -c 'launch ubuntu22; upload latency/d.txt; submit latency/submit.json' >/dev/null
latency=$(python3 - "$bin" <<'PY'
import subprocess, sys, time
seen = {}
deadline = time.time() + 30
while len(seen) < 5 and time.time() < deadline:
    out = subprocess.run([sys.argv[1], "latency", "-c", "job_output"], capture_output=True, text=True).stdout
    now = time.time()
    for line in out.splitlines():
        if line.startswith("mark ") and line.split()[1] not in seen:
            seen[line.split()[1]] = now - float(line.split()[2])
print(f"{max(seen.values())*1000:.0f} ms worst, {sum(seen.values())/len(seen)*1000:.0f} ms mean over {len(seen)} lines")
PY
)
# ---- local backend: memory while a job runs (the waiting shell, and the job's supervisor) ------
"$bin" latency -c 'submit latency/submit.json' >/dev/null
"$bin" latency -c 'submit latency/submit.json' >/dev/null
sleep 2
/usr/bin/time -f %M -o wait.rss "$bin" latency -c 'job_status --wait' >/dev/null &
waiter=$!
sleep 1
supervisor_rss=$(python3 - "$DEVAMI_HOME" <<'PY'
import glob, sys
peak = 0
for status in glob.glob("/proc/[0-9]*/status"):
    try:
        cmd = open(status.replace("status", "cmdline"), "rb").read().split(b"\0")
        if b"__job" in cmd and sys.argv[1].encode() in cmd:
            peak = max(peak, int([l for l in open(status) if l.startswith("VmHWM")][0].split()[1]))
    except OSError:
        pass
print(f"{peak/1024:.1f} MiB" if peak else "not found")
PY
)
wait "$waiter"
waitrss=$(mb wait.rss)
"$bin" latency -c 'terminate --force' >/dev/null

# ---- local backend: how soon `job_status --wait` notices that a job ended ----------------------
# The job's last act writes the time; the lag is from then to devami's return (whole process).
job_blueprint notice 'sleep $(cat /tmp/delay); date +%s.%N > /tmp/ended'
"$bin" notice -c 'launch ubuntu22; upload notice/d.txt' >/dev/null
notice=$(python3 - "$bin" <<'PY'
import subprocess, sys, time
binary = sys.argv[1]
lags = []
for delay in (0.3, 0.8, 1.7, 2.9, 4.3, 6.1):
    subprocess.run([binary, "notice", "-c", f'exec "echo {delay} > /tmp/delay"'], check=True, capture_output=True)
    subprocess.run([binary, "notice", "-c", "submit notice/submit.json"], check=True, capture_output=True)
    subprocess.run([binary, "notice", "-c", "job_status --wait"], check=True, capture_output=True)
    done = time.time()
    ended = subprocess.run([binary, "notice", "-c", "exec cat /tmp/ended"], check=True, capture_output=True, text=True).stdout
    lags.append(done - float(ended.strip().splitlines()[-1]))
print(f"{max(lags)*1000:.0f} ms worst, {sum(lags)/len(lags)*1000:.0f} ms mean over {len(lags)} jobs of 0.3 s to 6.1 s")
PY
)
"$bin" notice -c 'terminate --force' >/dev/null

# ---- local backend: the whole development loop (the first-image tutorial, replayed) ------------
# Launch, install, create_devami, update_blueprint (git), upload, submit, wait, output, terminate:
# `devami run --check` of docs/tutorials/first-image.md on a fresh copy of blueprints/ each run.
hyperfine --runs 5 --export-json loop.json \
  --prepare "rm -rf $work/loop && mkdir -p $work/loop && cp -r $repo/blueprints $work/loop/" \
  "cd $work/loop && DEVAMI_HOME=$work/loop/home $bin run --check $repo/docs/tutorials/first-image.md" >/dev/null 2>&1 || {
  echo "error: the local loop failed; run it by hand: cd \$(mktemp -d) && cp -r $repo/blueprints . && $bin run --check $repo/docs/tutorials/first-image.md" >&2; exit 1; }
local_loop=$(python3 - <<'PY'
import json
r = json.load(open("loop.json"))["results"][0]
print(f"{r['mean']*1000:.0f} ms mean ± {r['stddev']*1000:.0f} (min {r['min']*1000:.0f} ms, max {r['max']*1000:.0f} ms) over 5 runs")
PY
)
steps=$(grep -c '^devami> ' "$repo/docs/tutorials/first-image.md")

# ---- AWS backend: the full loop against moto, wall time and API calls per command ------------
mkdir -p "$work/moto"
moto_out=$("$repo/.venv/bin/python" "$repo/benches/moto_loop.py" "$bin" "$work/moto")
moto_loop=$(printf '%s\n' "$moto_out" | grep -v '^STATE_CHANGE_LAG ')
moto_lag=$(printf '%s\n' "$moto_out" | sed -n 's/^STATE_CHANGE_LAG //p')

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
  echo
  echo "## Local backend: an instance that wrote 1 GiB in 10,000 files (targets: create_devami at most 1.2x podman commit; launch at most 1.5x podman run -d and under 1 s)"
  echo
  echo "Each commit of its own instance's data, $cache_note."
  echo
  echo "| operation | wall time | against |"
  echo "| --- | --- | --- |"
  echo "| \`create_devami\` (whole devami process, until available) | $snapshot ms | $(ratio "$commit" "$snapshot") of \`podman commit\` |"
  echo "| \`podman commit --pause=false\` of the same container | $commit ms | |"
  echo "| \`cp -a\` of the same tree inside the instance (+ sync) | $cpa ms | |"
  echo "| \`launch\` from that image (whole devami process, until running) | $launch ms | $(ratio "$rund" "$launch") of \`podman run -d\` |"
  echo "| \`podman run -d --init --network host\` of the same image | $rund ms | |"
  echo
  echo "## Local backend: a 1 GiB object through the embedded S3 endpoint (target: faster than aws s3 cp; devami's peak memory under 200 MB)"
  echo
  echo "| transfer | devami | aws s3 cp | devami peak memory (max RSS) |"
  echo "| --- | --- | --- | --- |"
  echo "| upload | $up ms | $cliup ms | $uprss |"
  echo "| download | $down ms | $clidown ms | $downrss |"
  echo
  echo "## Local backend: 1,000 small files ($smallsize) through the embedded S3 endpoint (target: at least 2x faster than aws s3 sync)"
  echo
  echo "Median of 3 rounds; each is a whole devami process (\`upload DIR KEY\`, \`download KEY DIR\`) or \`aws s3 sync\` into an empty prefix or folder."
  echo
  echo "| transfer | devami | aws s3 sync | devami is faster by |"
  echo "| --- | --- | --- | --- |"
  echo "| upload | $treeup ms | $treecliup ms | $(ratio "$treeup" "$treecliup") |"
  echo "| download | $treedown ms | $treeclidown ms | $(ratio "$treedown" "$treeclidown") |"
  echo
  echo "## Local backend: a job prints a line, \`job_output\` shows it (target: under 1 s)"
  echo
  echo "$latency (polling \`devami -c job_output\` in a loop)"
  echo
  echo "## Local backend: memory while a job runs"
  echo
  echo "| process | peak memory (max RSS) |"
  echo "| --- | --- |"
  echo "| the shell in \`job_status --wait\` | $waitrss |"
  echo "| the job's supervisor (\`devami __job\`) | $supervisor_rss |"
  echo
  echo "## Noticing a change: from the change to the waiting command's return (target: about 1 s: waits poll at 100 ms growing to 1 s)"
  echo
  echo "| change | lag |"
  echo "| --- | --- |"
  echo "| a local job ends, \`job_status --wait\` returns | $notice |"
  echo "| a moto instance turns \`running\` (held \`pending\` 3 s by the test proxy), \`launch_devinstance\` returns | $moto_lag |"
  echo
  echo "## Local backend: the whole development loop"
  echo
  echo "\`devami run --check docs/tutorials/first-image.md\` ($steps commands: launch, install, create_devami, update_blueprint with git, upload, submit, wait, output, terminate) on a fresh copy of blueprints/: $local_loop."
  echo
  echo "## AWS backend: the development loop against moto (each command its own devami process)"
  echo
  echo "The original tool sleeps 5 s after every submit and polls every 15 s; devami has no fixed sleep."
  echo
  echo "$moto_loop"
} > "$repo/benches/results/latest.md"
# docs/PERFORMANCE.md shows the same figures between its markers (its title line dropped).
python3 - "$repo/benches/results/latest.md" "$repo/docs/PERFORMANCE.md" <<'PY'
import sys
latest, page = sys.argv[1], sys.argv[2]
figures = open(latest).read().split("\n", 1)[1].strip().replace("\n## ", "\n### ")
text = open(page).read()
begin, end = "<!-- bench:begin -->", "<!-- bench:end -->"
head, rest = text.split(begin, 1)
_, tail = rest.split(end, 1)
open(page, "w").write(f"{head}{begin}\n{figures}\n{end}{tail}")
PY
cat "$repo/benches/results/latest.md"
