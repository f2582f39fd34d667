"""A small HTTP proxy in front of moto that makes the cloud slow or faulty, for devami's tests.

Usage: moto_proxy.py TARGET_URL [--port N] [--rules JSON]

moto changes EC2 states and images at once; real AWS does not. The proxy forwards every request
(method, path, query, headers, body) to TARGET_URL and rewrites some answers so that devami's
waits are exercised for real:

  hold_instances (seconds): for that long after an instance appears in a RunInstances answer
      (or is named by StartInstances), DescribeInstances / DescribeInstanceStatus show it
      `pending` (code 0) instead of `running`; after StopInstances, `stopping` instead of
      `stopped`; after TerminateInstances, `shutting-down` instead of `terminated`.
  hold_status (seconds): for that long after the launch or start, DescribeInstanceStatus reports
      both status checks `initializing` (at least hold_instances).
  hold_images (seconds): for that long after CreateImage, DescribeImages shows the image
      `pending` instead of `available`.
  hold_commands (seconds): for that long after SendCommand, GetCommandInvocation, ListCommands
      and ListCommandInvocations report the command `InProgress` instead of `Success` (moto
      answers every command with Success at once).
  CancelCommand (always; moto 5.2.5 does not implement it): answered `{}` by the proxy itself,
      never forwarded. A command still shown `InProgress` (held, see hold_commands) when it is
      cancelled is reported `Cancelled` from then on (StatusDetails `Cancelled`, ResponseCode -1)
      by GetCommandInvocation, ListCommands and ListCommandInvocations; a command already shown
      finished stays as it was, as on AWS. The call is logged with status "emulated".
  failures: a list of {"action": "DescribeInstances" | "*", "mode": "close" | "error",
      "status": 503, "code": "ServiceUnavailable", "message": "...", "count": N or null};
      a matching call gets that answer instead of moto's (`close` drops the connection without
      an answer). `count` calls fail, then the rule is spent (null: forever).

Control endpoint (not forwarded):
  GET  /__proxy/rules   the current rules          POST /__proxy/rules   merge JSON into them
  GET  /__proxy/log     every forwarded call: [{"t", "service", "action", "status"}]
  POST /__proxy/log     clear the log

The first line on stdout is {"port": N} once the proxy listens; everything else goes to stderr.
"""

import http.client
import json
import re
import socket
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}

LOCK = threading.Lock()
RULES = {"hold_instances": 0.0, "hold_status": 0.0, "hold_images": 0.0, "hold_commands": 0.0, "failures": []}
LOG = []
# instance id -> (transition, time): "launch", "start", "stop", "terminate"
INSTANCES = {}
IMAGES = {}  # image id -> creation time
COMMANDS = {}  # SSM command id -> send time
CANCELLED = {}  # SSM command id -> cancel time (CancelCommand, emulated)
TARGET = None

HELD = {
    # transition: (the real state, what is shown instead, its code)
    "launch": ("running", "pending", 0),
    "start": ("running", "pending", 0),
    "stop": ("stopped", "stopping", 64),
    "terminate": ("terminated", "shutting-down", 32),
}


def service_of(headers):
    auth = headers.get("Authorization", "")
    m = re.search(r"Credential=[^/]+/[^/]+/[^/]+/([^/]+)/", auth)
    return m.group(1) if m else "?"


def action_of(method, path, headers, body):
    target = headers.get("X-Amz-Target")
    if target:
        return target.split(".")[-1], "json"
    ctype = headers.get("Content-Type", "")
    if "x-www-form-urlencoded" in ctype and body:
        form = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
        if "Action" in form:
            return form["Action"][0], "query"
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query)
    if "Action" in query:
        return query["Action"][0], "query"
    return f"{method} {urllib.parse.urlsplit(path).path}", "rest"


def error_body(kind, service, code, message):
    """An error in the protocol the caller speaks."""
    if kind == "json":
        return "application/x-amz-json-1.1", json.dumps({"__type": code, "message": message})
    if kind == "query" and service == "ec2":
        return "text/xml", (
            f"<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors>"
            "<RequestID>devami-proxy</RequestID></Response>"
        )
    if kind == "query":
        return "text/xml", (
            f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message>"
            "</Error><RequestId>devami-proxy</RequestId></ErrorResponse>"
        )
    return "application/xml", f"<Error><Code>{code}</Code><Message>{message}</Message></Error>"


def take_failure(action):
    with LOCK:
        for rule in RULES["failures"]:
            if rule.get("action", "*") not in ("*", action):
                continue
            count = rule.get("count")
            if count is not None:
                if count <= 0:
                    continue
                rule["count"] = count - 1
            return dict(rule)
    return None


def ids_in(xml, tag):
    return re.findall(rf"<{tag}>([^<]+)</{tag}>", xml)


def items_with(xml, id_tag):
    """(start, end, id) of every `<item>` element that has a direct `<id_tag>` child."""
    out = []
    stack = []
    for m in re.finditer(r"<(/?)item(\s[^>]*)?(/?)>", xml):
        closing, selfclosing = m.group(1) == "/", m.group(3) == "/"
        if selfclosing:
            continue
        if not closing:
            stack.append(m.start())
            continue
        start = stack.pop()
        inner = xml[start:m.end()]
        # A direct child: at nesting depth 1 inside this item.
        depth = 0
        for t in re.finditer(rf"<(/?)item(?:\s[^>]*)?(/?)>|<{id_tag}>([^<]+)</{id_tag}>", inner):
            if t.group(3) is not None:
                if depth == 1:
                    out.append((start, m.end(), t.group(3)))
                    break
            elif t.group(2) == "/":
                continue
            elif t.group(1) == "/":
                depth -= 1
            else:
                depth += 1
    return out


def rewrite_items(xml, id_tag, fix):
    """Applies fix(item_text, id) -> item_text or None (drop) to every item with a direct id_tag."""
    items = sorted(items_with(xml, id_tag), key=lambda x: (x[0], -x[1]))
    # Only the outermost matches: a fix covers everything nested in its item.
    outer = []
    for item in items:
        if not outer or item[0] >= outer[-1][1]:
            outer.append(item)
    for start, end, ident in reversed(outer):
        new = fix(xml[start:end], ident)
        if new is None:
            new = ""
        xml = xml[:start] + new + xml[end:]
    return xml


def held_instance(ident, now):
    with LOCK:
        entry = INSTANCES.get(ident)
        hold = RULES["hold_instances"]
        hold_status = max(RULES["hold_status"], hold)
    if not entry:
        return None, False
    transition, since = entry
    age = now - since
    shown = HELD[transition] if age < hold else None
    checks_initializing = transition in ("launch", "start") and age < hold_status
    return shown, checks_initializing


def set_state(item, real, shown, code):
    pattern = re.compile(
        r"(<(instanceState|currentState)>\s*<code>)(\d+)(</code>\s*<name>)" + re.escape(real) + r"(</name>)"
    )
    return pattern.sub(lambda m: f"{m.group(1)}{code}{m.group(4)}{shown}{m.group(5)}", item)


def rewrite(action, form, xml):
    now = time.time()
    if action == "RunInstances":
        with LOCK:
            for ident in ids_in(xml, "instanceId"):
                INSTANCES.setdefault(ident, ("launch", now))
        return xml
    if action in ("StartInstances", "StopInstances", "TerminateInstances"):
        transition = {"StartInstances": "start", "StopInstances": "stop", "TerminateInstances": "terminate"}[
            action
        ]
        with LOCK:
            for ident in ids_in(xml, "instanceId"):
                INSTANCES[ident] = (transition, now)
        real, shown, code = HELD[transition]
        return rewrite_items(
            xml,
            "instanceId",
            lambda item, ident: set_state(item, real, shown, code) if held_instance(ident, now)[0] else item,
        )
    if action == "CreateImage":
        with LOCK:
            for ident in ids_in(xml, "imageId"):
                IMAGES[ident] = now
        return xml
    if action == "DescribeInstances":

        def fix(item, ident):
            shown, _ = held_instance(ident, now)
            return set_state(item, *shown) if shown else item

        return rewrite_items(xml, "instanceId", fix)
    if action == "DescribeInstanceStatus":
        include_all = form.get("IncludeAllInstances", ["false"])[0].lower() == "true"

        def fix(item, ident):
            shown, initializing = held_instance(ident, now)
            if shown:
                real, _, _ = shown
                if real == "running" and not include_all:
                    return None  # AWS lists only running instances unless asked for all
                item = set_state(item, *shown)
            if initializing:
                item = re.sub(
                    r"(<(instanceStatus|systemStatus)>.*?)</\2>",
                    lambda m: re.sub(r"<status>[^<]*</status>", "<status>initializing</status>", m.group(0)),
                    item,
                    flags=re.S,
                )
            return item

        return rewrite_items(xml, "instanceId", fix)
    if action == "DescribeImages":

        def fix(item, ident):
            with LOCK:
                since = IMAGES.get(ident)
                hold = RULES["hold_images"]
            if since is not None and now - since < hold:
                item = item.replace("<imageState>available</imageState>", "<imageState>pending</imageState>")
            return item

        return rewrite_items(xml, "imageId", fix)
    return xml


def cancel_command(body):
    """CancelCommand, which moto lacks: cancels the given command if it is still shown InProgress."""
    now = time.time()
    try:
        ident = json.loads(body or b"{}").get("CommandId")
    except ValueError:
        ident = None
    with LOCK:
        since = COMMANDS.get(ident)
        if since is not None and now - since < RULES["hold_commands"]:
            CANCELLED.setdefault(ident, now)
    return "application/x-amz-json-1.1", "{}"


def rewrite_json(action, data):
    now = time.time()
    if action == "SendCommand":
        ident = (data.get("Command") or {}).get("CommandId")
        if ident:
            with LOCK:
                COMMANDS[ident] = now
        return data
    if action not in ("GetCommandInvocation", "ListCommands", "ListCommandInvocations"):
        return data

    def held(ident):
        with LOCK:
            since = COMMANDS.get(ident)
            hold = RULES["hold_commands"]
        return since is not None and now - since < hold

    def cancelled(ident):
        with LOCK:
            return ident in CANCELLED

    def walk(node):
        if isinstance(node, list):
            for x in node:
                walk(x)
        elif isinstance(node, dict):
            if cancelled(node.get("CommandId")) and "Status" in node:
                node["Status"] = "Cancelled"
                if "StatusDetails" in node:
                    node["StatusDetails"] = "Cancelled"
                if "ResponseCode" in node:
                    node["ResponseCode"] = -1
            elif held(node.get("CommandId")) and node.get("Status") == "Success":
                node["Status"] = "InProgress"
                if "StatusDetails" in node:
                    node["StatusDetails"] = "InProgress"
                if "ResponseCode" in node:
                    node["ResponseCode"] = -1
                if "CompletedCount" in node:
                    node["CompletedCount"] = 0
                for k in ("ExecutionEndDateTime",):
                    node.pop(k, None)
            for v in node.values():
                walk(v)

    walk(data)
    return data


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        sys.stderr.write("proxy: " + (fmt % args) + "\n")

    def read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def reply(self, status, ctype, body):
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def control(self, body):
        path = urllib.parse.urlsplit(self.path).path
        if path == "/__proxy/rules":
            if self.command == "POST":
                update = json.loads(body or b"{}")
                with LOCK:
                    RULES.update(update)
            with LOCK:
                out = json.dumps(RULES)
            return self.reply(200, "application/json", out)
        if path == "/__proxy/log":
            with LOCK:
                if self.command == "POST":
                    LOG.clear()
                out = json.dumps(LOG)
            return self.reply(200, "application/json", out)
        return self.reply(404, "text/plain", "unknown control path")

    def handle_any(self):
        body = self.read_body()
        if self.path.startswith("/__proxy/"):
            return self.control(body)
        action, kind = action_of(self.command, self.path, self.headers, body)
        service = service_of(self.headers)
        if action == "CancelCommand" and kind == "json":
            with LOCK:
                LOG.append({"t": time.time(), "service": service, "action": action, "status": "emulated"})
            return self.reply(200, *cancel_command(body))
        failure = take_failure(action)
        if failure:
            with LOCK:
                LOG.append({"t": time.time(), "service": service, "action": action, "status": "injected"})
            if failure.get("mode") == "close":
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                return
            code = failure.get("code", "ServiceUnavailable")
            ctype, text = error_body(kind, service, code, failure.get("message", f"{code} (injected by the test proxy)"))
            return self.reply(int(failure.get("status", 503)), ctype, text)

        target = urllib.parse.urlsplit(TARGET)
        conn = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP and k.lower() != "content-length"}
        if body or self.command in ("POST", "PUT"):
            headers["Content-Length"] = str(len(body))
        try:
            conn.request(self.command, self.path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        except OSError as e:
            return self.reply(502, "text/plain", f"proxy: moto did not answer: {e}")
        finally:
            conn.close()
        with LOCK:
            LOG.append({"t": time.time(), "service": service, "action": action, "status": resp.status})
        if kind == "query" and resp.status == 200:
            form = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
            text = data.decode("utf-8")
            new = rewrite(action, form, text)
            if new != text:
                data = new.encode("utf-8")
        elif kind == "json" and resp.status == 200 and data:
            try:
                data = json.dumps(rewrite_json(action, json.loads(data))).encode("utf-8")
            except ValueError:
                pass
        self.send_response(resp.status, resp.reason)
        for k, v in resp.getheaders():
            if k.lower() not in HOP and k.lower() != "content-length":
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = handle_any


def main():
    global TARGET
    args = sys.argv[1:]
    TARGET = args.pop(0).rstrip("/")
    port = 0
    while args:
        flag = args.pop(0)
        if flag == "--port":
            port = int(args.pop(0))
        elif flag == "--rules":
            RULES.update(json.loads(args.pop(0)))
        else:
            raise SystemExit(f"unknown option {flag}")
    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer.allow_reuse_address = True
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    sys.stdout.write(json.dumps({"port": server.server_address[1]}) + "\n")
    sys.stdout.flush()
    server.serve_forever()


if __name__ == "__main__":
    main()
