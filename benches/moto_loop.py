#!/usr/bin/env python3
"""The full development loop against moto: wall time and AWS API calls per devami command.

Usage: moto_loop.py DEVAMI_BINARY WORK_DIR   (run with the repository's .venv/bin/python)
Starts moto_server and the counting proxy of the tests (tests/integration/moto_proxy.py) in front
of it, seeds what a blueprint needs (tests/integration/seed_moto.py), then runs each command of the
loop as its own `devami --backend aws` process and prints a markdown table.
"""
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
venv = os.path.join(repo, ".venv", "bin")
devami, work = sys.argv[1], sys.argv[2]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


port = free_port()
moto = subprocess.Popen([os.path.join(venv, "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
proxy = None
try:
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            urllib.request.urlopen(url + "/moto-api/", timeout=1)
            break
        except Exception:
            time.sleep(0.05)
    proxy = subprocess.Popen([os.path.join(venv, "python"), os.path.join(repo, "tests/integration/moto_proxy.py"), url],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    pport = json.loads(proxy.stdout.readline())["port"]
    purl = f"http://127.0.0.1:{pport}"
    spec = {"key_name": "bench-key", "key_path": os.path.join(work, "bench-key.pem"),
            "security_group": "bench-sg", "instance_profile": "SSMRole", "bucket": "bench-loop",
            "ami_name_like": "ubuntu", "parameters": {}}
    seed = json.loads(subprocess.check_output([os.path.join(venv, "python"),
                                               os.path.join(repo, "tests/integration/seed_moto.py"), url, json.dumps(spec)]))
    ami = seed["ami"]
    subprocess.check_call([devami, "init", "bench-loop"], cwd=work, stdout=subprocess.DEVNULL)
    path = os.path.join(work, "bench-loop", "stack_config_template.json")
    doc = json.load(open(path))
    lc = doc["Lambda"]["LambdaConfig"]
    lc.update(AMI=ami, KEY_NAME="bench-key", SECURITY_GROUPS="bench-sg", IAM_ROLE="SSMRole")
    json.dump(doc, open(path, "w"), indent=4)
    open(os.path.join(work, "d.txt"), "w").write("data\n")
    open(os.path.join(work, "s.json"), "w").write(
        '{"dataname": "debuggers/inputs/d.txt", "configname": "debuggers/inputs/d.txt", "timestamp": "1"}')
    env = dict(os.environ, AWS_ACCESS_KEY_ID="AKIADEVAMITEST000001", AWS_SECRET_ACCESS_KEY="devami-test-secret-never-printed",
               AWS_DEFAULT_REGION="us-east-1", AWS_REGION="us-east-1", AWS_ENDPOINT_URL=purl,
               AWS_CONFIG_FILE=os.path.join(work, "none"), AWS_SHARED_CREDENTIALS_FILE=os.path.join(work, "none"),
               AWS_EC2_METADATA_DISABLED="true")
    loop = ["launch_devinstance", "get_instance_state", "stop_devinstance", "start_devinstance",
            "create_devami bench-image", "update_blueprint --init", "upload d.txt", "submit_job s.json",
            "job_status --wait", "job_output", "terminate_devinstance"]
    rows, total_t, total_calls = [], 0.0, 0
    for cmd in loop:
        urllib.request.urlopen(urllib.request.Request(purl + "/__proxy/log", method="POST", data=b""))
        t0 = time.perf_counter()
        out = subprocess.run([devami, "--backend", "aws", "bench-loop", "-c", cmd], cwd=work, env=env,
                             capture_output=True, text=True)
        dt = time.perf_counter() - t0
        if out.returncode != 0:
            sys.exit(f"`{cmd}` failed:\n{out.stdout}{out.stderr}")
        log = json.load(urllib.request.urlopen(purl + "/__proxy/log"))
        actions = {}
        for c in log:
            a = c["action"]
            a = f"S3 {a.split(' ')[0]}" if " /" in a else a
            actions[a] = actions.get(a, 0) + 1
        rows.append((cmd, dt, len(log), ", ".join(f"{a} {n}" for a, n in sorted(actions.items()))))
        total_t += dt
        total_calls += len(log)
    print("| command | wall time | API calls | calls |")
    print("| --- | --- | --- | --- |")
    for cmd, dt, n, detail in rows:
        print(f"| `{cmd}` | {dt*1000:.0f} ms | {n} | {detail} |")
    print(f"| whole loop | {total_t*1000:.0f} ms | {total_calls} | |")

    # How soon a wait notices a state change: the proxy shows a launched instance `pending` for
    # HOLD seconds after RunInstances; devami's launch wait returns once it sees `running`.
    hold = 3.0
    lags = []
    for _ in range(5):
        urllib.request.urlopen(urllib.request.Request(purl + "/__proxy/rules", method="POST",
                                                      data=json.dumps({"hold_instances": hold}).encode()))
        urllib.request.urlopen(urllib.request.Request(purl + "/__proxy/log", method="POST", data=b""))
        out = subprocess.run([devami, "--backend", "aws", "bench-loop", "-c", "launch_devinstance"], cwd=work,
                             env=env, capture_output=True, text=True)
        done = time.time()
        if out.returncode != 0:
            sys.exit(f"`launch_devinstance` failed:\n{out.stdout}{out.stderr}")
        log = json.load(urllib.request.urlopen(purl + "/__proxy/log"))
        run_at = next(c["t"] for c in log if c["action"] == "RunInstances")
        lags.append(done - (run_at + hold))
        urllib.request.urlopen(urllib.request.Request(purl + "/__proxy/rules", method="POST",
                                                      data=json.dumps({"hold_instances": 0}).encode()))
        subprocess.run([devami, "--backend", "aws", "bench-loop", "-c", "terminate_devinstance --force"], cwd=work,
                       env=env, capture_output=True, text=True, check=True)
    print()
    print(f"STATE_CHANGE_LAG {max(lags)*1000:.0f} ms worst, {sum(lags)/len(lags)*1000:.0f} ms mean over {len(lags)} launches")
finally:
    for p in (proxy, moto):
        if p:
            p.kill()
