#!/usr/bin/env python3
"""End-to-end tests of `dtest serve` with real `dtest node` processes, driven the way a client
would: `requests` on the REST API, `websockets` on the event stream, schemathesis on the OpenAPI
document. Run by cli/tests/it/serve.rs, one case per process:

    python3 cli/tests/serve_e2e.py PATH-TO-DTEST CASE

Each case starts its own service and nodes on free ports in a fresh temporary directory, and
kills every process it started (the commands the nodes ran too) before it returns. Exit status
0 means the case passed; otherwise the reason and the processes' logs are on stdout.
"""

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
import xml.etree.ElementTree as ElementTree

import requests
import websockets
from websockets.asyncio.client import connect as ws_connect

from e2e import TERMINAL, Failed, Target, check, kill_tagged, print_logs, scenario, tagged_pids, wait_for

class Cluster:
    """A service and its nodes in a temporary directory, every process tagged so that none
    outlives the case (the nodes' commands run in their own process groups, so the tag, which
    they inherit in their environment, is how they are found)."""

    def __init__(self, dtest):
        self.dtest = dtest
        self.dir = tempfile.mkdtemp(prefix="dtest-serve-e2e-")
        self.tag = uuid.uuid4().hex
        self.token = "operator-" + uuid.uuid4().hex
        self.read_token = "reader-" + uuid.uuid4().hex
        self.token_file = self.path("token")
        self.read_token_file = self.path("read-token")
        for file, token in [(self.token_file, self.token), (self.read_token_file, self.read_token)]:
            with open(file, "w") as f:
                f.write(token + "\n")
        self.data = self.path("data")
        self.procs = []  # (name, Popen, log prefix)
        self.serve = None
        self.url = None
        self.nodes = {}  # name -> Popen
        self.starts = 0
        # How requests reach the service: what it trusts, and the client certificate it shows.
        self.verify = True
        self.cert = None

    def path(self, *parts):
        return os.path.join(self.dir, *parts)

    def spawn(self, name, argv):
        """Starts `argv`, its stdout and stderr in files; returns it and its first stdout line."""
        self.starts += 1
        prefix = self.path(f"{name}.{self.starts}")
        env = dict(os.environ, DTEST_E2E_TAG=self.tag)
        with open(prefix + ".out", "w") as out, open(prefix + ".err", "w") as err:
            proc = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env, cwd=self.dir)
        self.procs.append((name, proc, prefix))

        def first_line():
            if proc.poll() is not None:
                raise Failed(f"{name} exited with {proc.returncode} before saying where it listens")
            with open(prefix + ".out") as f:
                text = f.read()
            return text.split("\n", 1)[0] if "\n" in text else None

        line = wait_for(f"{name}'s first stdout line", first_line, 20)
        return proc, line

    def start_serve(self, listen="127.0.0.1:0", extra=()):
        argv = [self.dtest, "serve", "--listen", listen, "--token-file", self.token_file,
                "--read-token-file", self.read_token_file, "--data", self.data, *extra]
        self.serve, line = self.spawn("serve", argv)
        prefix = "dtest serve listening on "
        check(line.startswith(prefix), f"serve's first line: {line!r}")
        self.url = line[len(prefix):].strip()
        healthy = lambda: requests.get(self.url + "/healthz", timeout=2, verify=self.verify, cert=self.cert).status_code == 200
        wait_for("/healthz", healthy, 10)
        return self.url

    def start_node(self, name, extra=()):
        workdir = self.path(f"work-{name}")
        os.makedirs(workdir, exist_ok=True)
        argv = [self.dtest, "node", "--listen", "127.0.0.1:0", "--token-file", self.token_file, "--allow-commands",
                "--group", "local", "--name", name, "--workdir", workdir, "--orchestrator", self.url,
                # Room for two of the scenarios' tasks at a time: 9 tasks take two waves on 3 nodes.
                "--resources", "cpu_millis=1000,memory_mb=1024", *extra]
        proc, line = self.spawn(name, argv)
        check(line.startswith("dtest node listening on "), f"{name}'s first line: {line!r}")
        self.nodes[name] = proc
        return proc

    def start(self, nodes, extra=()):
        self.start_serve(extra=extra)
        for i in range(nodes):
            self.start_node(f"node-{i}")
        if nodes:
            self.wait_nodes(nodes)

    def wait_nodes(self, count):
        # Answering a probe, not just registered: a node the service never reached is `healthy`
        # for want of evidence, and would stay so if it died.
        def ready():
            listed = self.get("/v1/nodes").json()
            seen = [n for n in listed if n["state"] == "healthy" and n["last_seen_ms"]]
            return len(seen) == count and len(listed) == count
        wait_for(f"{count} healthy nodes, each seen by a probe, in GET /v1/nodes", ready, 30)

    # ---- HTTP ----

    def headers(self, token=None):
        return {"Authorization": f"Bearer {token or self.token}"}

    def get(self, route, token=None, **kwargs):
        return requests.get(self.url + route, headers=self.headers(token), timeout=10, verify=self.verify,
                            cert=self.cert, **kwargs)

    def post(self, route, body, token=None):
        return requests.post(self.url + route, json=body, headers=self.headers(token), timeout=30,
                             verify=self.verify, cert=self.cert)

    def submit(self, scenario):
        answer = self.post("/v1/executions", {"scenario": scenario})
        check(answer.status_code == 201, f"POST /v1/executions: {answer.status_code} {answer.text}")
        return answer.json()["id"]

    def wait_state(self, id, timeout_s=90):
        def ended():
            view = self.get(f"/v1/executions/{id}").json()
            return view if view["state"] in TERMINAL else None
        return wait_for(f"execution {id} to end", ended, timeout_s)

    def wait_succeeded(self, id, timeout_s=90):
        view = self.wait_state(id, timeout_s)
        check(view["state"] == "succeeded", f"execution {id} ended {view['state']}: {json.dumps(view, indent=1)}")
        return view

    # ---- teardown ----

    def tagged_pids(self):
        return tagged_pids(self.tag)

    def kill_all(self):
        for _, proc, _ in self.procs:
            if proc.poll() is None:
                proc.kill()
        for _, proc, _ in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        # The commands the nodes started, orphaned by a killed node or left by a killed service.
        kill_tagged(self.tag)

    def logs(self):
        print_logs(prefix for _, _, prefix in self.procs)


def lines(file):
    try:
        with open(file) as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []


def check_counts(view, count):
    tasks = (view.get("summary") or {}).get("tasks") or {}
    check(tasks.get("submitted") == count and tasks.get("completed") == count,
          f"tasks completed == submitted == {count}: {json.dumps(view, indent=1)}")
    check(tasks.get("lost") == 0 and tasks.get("duplicated") == 0,
          f"nothing lost or duplicated: {json.dumps(view, indent=1)}")


# ---- cases ----------------------------------------------------------------------------------


def submit_and_poll(c):
    c.start(3)
    check(len(c.get("/v1/nodes").json()) == 3, "GET /v1/nodes lists the 3 nodes")
    id = c.submit(scenario("poll", 9, ["sh", "-c", "sleep 0.5"]))
    view = c.wait_succeeded(id)
    check_counts(view, 9)
    for format, content_type in [("json", "application/json"), ("html", "text/html"), ("junit", "application/xml")]:
        answer = c.get(f"/v1/executions/{id}/report", params={"format": format})
        check(answer.status_code == 200, f"report {format}: {answer.status_code} {answer.text[:500]}")
        got = answer.headers.get("Content-Type", "")
        check(got.startswith(content_type), f"report {format}: Content-Type {got!r}, expected {content_type}")
        if format == "json":
            report = answer.json()
            check(report["tasks"]["completed"] == 9, f"JSON report tasks: {report['tasks']}")
        elif format == "html":
            check("<html" in answer.text.lower(), "the HTML report is HTML")
        else:
            root = ElementTree.fromstring(answer.content)
            cases = root.findall(".//testcase")
            check(len(cases) == 9, f"JUnit holds 9 test cases, not {len(cases)}")
    answer = c.get(f"/v1/executions/{id}/report", params={"format": "pdf"})
    check(answer.status_code == 400 and answer.json()["error"]["code"] == "bad_request",
          f"an unknown report format: {answer.status_code} {answer.text}")


async def read_until_finished(c, url, id, timeout_s=60):
    """Connects to `url` and reads events until `execution_finished` for `id`."""
    events = []
    async with ws_connect(url, additional_headers=c.headers(), open_timeout=10) as socket:
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            check(left > 0, f"no execution_finished for {id} within {timeout_s} s; got {[e['type'] for e in events]}")
            try:
                text = await asyncio.wait_for(socket.recv(), timeout=left)
            except asyncio.TimeoutError:
                continue
            event = json.loads(text)
            events.append(event)
            if event["type"] == "execution_finished" and event["execution"] == id:
                return events


async def websocket_case(c):
    c.start(3)
    ws_url = c.url.replace("http://", "ws://", 1) + "/v1/events"
    count = 6
    # Connect before submitting: without `after`, only new events come.
    async with ws_connect(ws_url, additional_headers=c.headers(), open_timeout=10) as socket:
        id = await asyncio.to_thread(c.submit, scenario("events", count, ["sh", "-c", "sleep 0.3"]))
        events = []
        deadline = time.monotonic() + 60
        while not (events and events[-1]["type"] == "execution_finished" and events[-1]["execution"] == id):
            left = deadline - time.monotonic()
            check(left > 0, f"no execution_finished within 60 s; got {[e['type'] for e in events]}")
            try:
                events.append(json.loads(await asyncio.wait_for(socket.recv(), timeout=left)))
            except asyncio.TimeoutError:
                pass
    seqs = [e["seq"] for e in events]
    check(all(a < b for a, b in zip(seqs, seqs[1:])), f"seqs strictly increase: {seqs}")
    mine = [e for e in events if e["execution"] == id]
    types = [e["type"] for e in mine]
    check(types and types[0] == "execution_started", f"execution_started comes first: {types}")
    check(types[-1] == "execution_finished" and types.count("execution_finished") == 1,
          f"one execution_finished, last: {types}")
    check(mine[-1]["data"]["state"] == "succeeded", f"execution_finished says succeeded: {mine[-1]}")
    assigned, finished = {}, {}
    for position, event in enumerate(mine):
        task = event["data"].get("task")
        if event["type"] == "task_assigned":
            assigned.setdefault(task, position)
        elif event["type"] == "task_finished":
            check(task in assigned, f"task {task} finished before it was assigned: {types}")
            finished[task] = position
    check(len(finished) == count, f"a task_finished for each of {count} tasks: {sorted(finished)}")

    # Resume from the middle: exactly the events after it, again.
    middle = mine[len(mine) // 2]["seq"]
    resumed = await read_until_finished(c, f"{ws_url}?after={middle}", id)
    expected = [(e["seq"], e["type"], e["execution"]) for e in events if e["seq"] > middle]
    got = [(e["seq"], e["type"], e["execution"]) for e in resumed]
    check(got == expected, f"resuming after {middle} repeats the events after it:\nexpected {expected}\ngot      {got}")


def websocket_events_in_order_and_resume(c):
    asyncio.run(websocket_case(c))


def node_sigkill_mid_execution(c):
    c.start(3)
    started = c.path("started")
    argv = ["sh", "-c", f'echo "$DTEST_NODE" >> {started}; sleep 3']
    s = scenario("node-kill", 9, argv, duration_s=120)
    s["failure_detector"] = {}
    id = c.submit(s)
    # A node with a task running: its work must move elsewhere.
    victim = wait_for("a task to start", lambda: lines(started)[0] if lines(started) else None, 30)
    check(victim in c.nodes, f"the started file names a node: {victim!r}")
    c.nodes[victim].send_signal(signal.SIGKILL)
    c.nodes[victim].wait(timeout=10)
    view = c.wait_succeeded(id, timeout_s=110)
    check_counts(view, 9)
    check(view["summary"].get("reassignments", 0) >= 1, f"the killed node's work was reassigned: {view['summary']}")

    def victim_dead():
        return [n for n in c.get("/v1/nodes").json() if n["id"] == victim and n["state"] == "dead"]
    wait_for(f"GET /v1/nodes to say {victim} is dead", victim_dead, 30)


def serve_sigkill_and_restart(c):
    c.start(3)
    marks = c.path("marks")
    os.makedirs(marks)
    argv = ["sh", "-c", f"echo ran >> {marks}/marks-{{index}}; sleep 3"]
    id = c.submit(scenario("serve-kill", 9, argv))
    wait_for("a task to start", lambda: os.listdir(marks), 30)
    time.sleep(0.5)  # let the first wave start, so the kill lands mid-execution, not at its start
    c.serve.send_signal(signal.SIGKILL)
    c.serve.wait(timeout=10)
    begun = len(os.listdir(marks))
    check(begun < 9, f"the kill came before every task began ({begun} had): the rest are the restarted service's")
    # The same port: the nodes know the service by its URL, and re-register there.
    port = c.url.rsplit(":", 1)[1]
    c.start_serve(listen=f"127.0.0.1:{port}")
    view = c.wait_succeeded(id, timeout_s=90)
    counts = {name: len(lines(os.path.join(marks, name))) for name in sorted(os.listdir(marks))}
    check(len(counts) == 9, f"every task ran: {counts}")
    check(all(n == 1 for n in counts.values()), f"each task ran exactly once: {counts}")
    check_counts(view, 9)
    listed = [e["id"] for e in c.get("/v1/executions").json()]
    check(id in listed, f"GET /v1/executions lists {id} after the restart: {listed}")


def read_only_token_cannot_write(c):
    c.start(0)
    writes = [
        ("POST", "/v1/allocations", {"resources": {"cpu_millis": 100, "memory_mb": 10}}),
        ("PUT", "/v1/load/profiles/x", {"pattern": {"type": "constant", "rps": 1, "duration_s": 1}}),
        ("POST", "/v1/executions", {"scenario": scenario("ro", 1, ["true"])}),
    ]
    for method, route, body in writes:
        answer = requests.request(method, c.url + route, json=body, headers=c.headers(c.read_token), timeout=10)
        check(answer.status_code == 403, f"{method} {route} with the read-only token: {answer.status_code} {answer.text}")
        check(answer.json()["error"]["code"] == "forbidden", f"{method} {route}: {answer.text}")
    # The same profile with the operator token is stored: the 403 was the role's, not the body's.
    profile = writes[1][2]
    answer = requests.put(c.url + "/v1/load/profiles/x", json=profile, headers=c.headers(), timeout=10)
    check(answer.status_code == 204, f"PUT /v1/load/profiles/x with the operator token: {answer.status_code} {answer.text}")
    listed = c.get("/v1/load/profiles", token=c.read_token).json()
    check([p["name"] for p in listed] == ["x"], f"the read-only token reads the stored profile: {listed}")
    reads = ["/v1/nodes", "/v1/executions", "/v1/cluster", "/v1/alerts", "/v1/alerts/rules", "/v1/utilization",
             "/v1/connections", "/v1/load/profiles", "/openapi.json"]
    for route in reads:
        answer = c.get(route, token=c.read_token)
        check(answer.status_code == 200, f"GET {route} with the read-only token: {answer.status_code} {answer.text}")
    for route in ["/v1/nodes", "/v1/executions"]:
        answer = requests.get(c.url + route, timeout=10)
        check(answer.status_code == 401 and answer.json()["error"]["code"] == "unauthorized",
              f"GET {route} without a token: {answer.status_code} {answer.text}")
        answer = c.get(route, token="wrong-" + c.token)
        check(answer.status_code == 401 and answer.json()["error"]["code"] == "unauthorized",
              f"GET {route} with a wrong token: {answer.status_code} {answer.text}")
    answer = requests.post(c.url + "/v1/executions", json={}, timeout=10)
    check(answer.status_code == 401, f"POST without a token: {answer.status_code} {answer.text}")
    check(requests.get(c.url + "/healthz", timeout=10).status_code == 200, "/healthz needs no token")


def broadcast_reaches_running_commands(c):
    c.start(3)
    started = c.path("started")
    script = f'echo "$DTEST_NODE" >> {started}; while ! grep -q phase2 "$DTEST_INBOX" 2>/dev/null; do sleep 0.1; done'
    id = c.submit(scenario("broadcast", 3, ["sh", "-c", script], distribution="round_robin"))
    wait_for("3 commands running", lambda: len(lines(started)) == 3, 30)
    check(sorted(lines(started)) == sorted(c.nodes), f"one command per node: {lines(started)}")
    answer = c.post("/v1/messages/broadcast", {"body": {"signal": "phase2"}})
    check(answer.status_code == 200, f"broadcast: {answer.status_code} {answer.text}")
    deliveries = answer.json()["deliveries"]
    check(len(deliveries) == 3, f"a delivery per node: {deliveries}")
    check(all(d["delivered"] for d in deliveries), f"every delivery delivered: {deliveries}")
    check(all(d["delivered_to"] == 1 for d in deliveries), f"each node had one command running: {deliveries}")
    view = c.wait_succeeded(id, timeout_s=60)
    check_counts(view, 3)
    # One node, exactly once: a resend with the same id is recognised, not appended again.
    message = {"node": "node-0", "body": {"hello": 1}, "mode": "exactly_once", "id": "once-1"}
    first, again = c.post("/v1/messages", message).json(), c.post("/v1/messages", message).json()
    check(first["delivered"] and not first["duplicate"], f"the first send is delivered: {first}")
    check(again["delivered"] and again["duplicate"], f"the resend is a duplicate: {again}")
    inboxes = os.path.join(c.path("work-node-0"), ".dtest")
    inboxes = [os.path.join(inboxes, name) for name in os.listdir(inboxes) if name.endswith(".jsonl")]
    ids = [json.loads(line)["id"] for inbox in inboxes for line in lines(inbox)]
    check(ids.count("once-1") == 1, f"node-0's inbox holds the message once: {ids}")
    missing = c.post("/v1/messages", dict(message, node="nobody"))
    check(missing.status_code == 404, f"a message to an unknown node: {missing.status_code} {missing.text}")


def schemathesis_against_live_openapi(c):
    c.start(1, extra=["--rate-limit", "0"])
    # Every reference resolves: schemathesis skips, with only a warning, what it cannot resolve.
    document = c.get("/openapi.json").json()
    defined = set(document.get("components", {}).get("schemas", {}))
    referenced = set(re.findall(r'"#/components/schemas/([^"]+)"', json.dumps(document)))
    check(referenced <= defined, f"/openapi.json references undefined schemas: {sorted(referenced - defined)}")
    schemathesis = shutil.which("schemathesis") or os.path.join(os.path.dirname(sys.executable), "schemathesis")
    argv = [schemathesis, "run", c.url + "/openapi.json", "--header", f"Authorization: Bearer {c.token}",
            "--checks", "not_a_server_error,response_schema_conformance,status_code_conformance",
            "--max-examples", "20", "--seed", "1", "--generation-database", "none",
            # The WebSocket is no REST operation: its 101 is not something to fuzz.
            "--exclude-path", "/v1/events", "--no-color"]
    env = dict(os.environ, DTEST_E2E_TAG=c.tag)
    run = subprocess.run(argv, capture_output=True, text=True, timeout=240, env=env, cwd=c.dir)
    print(run.stdout[-20000:] if run.returncode != 0 else run.stdout[-3000:])
    print(run.stderr[-5000:])
    check(run.returncode == 0, f"schemathesis exited {run.returncode}")


def two_executions_share_nodes_without_over_commit(c):
    c.start(3)
    ran = c.path("ran")
    # Three tasks of 500 millicores on three nodes of 1000: each execution asks each node for
    # half (its need over the nodes), so two fit side by side and a third does not.
    def sharing(name):
        argv = ["sh", "-c", f'echo "$DTEST_NODE" >> {ran}-{name}; sleep 4']
        return scenario(name, 3, argv, distribution="round_robin")
    a = c.submit(sharing("a"))
    b = c.submit(sharing("b"))
    utilization = c.get("/v1/utilization").json()
    for node in utilization["nodes"]:
        check(node["reserved"]["cpu_millis"] == node["capacity"]["cpu_millis"] == 1000,
              f"two executions hold each node whole, and no more: {json.dumps(utilization, indent=1)}")
    third = c.post("/v1/executions", {"scenario": sharing("c")})
    check(third.status_code == 409 and third.json()["error"]["code"] == "conflict",
          f"a third execution finds no room: {third.status_code} {third.text}")
    for id in (a, b):
        check_counts(c.wait_succeeded(id, timeout_s=60), 3)
    for name in ("a", "b"):
        check(sorted(lines(f"{ran}-{name}")) == sorted(c.nodes), f"execution {name} ran a task on every node")

    def released():
        nodes = c.get("/v1/utilization").json()["nodes"]
        return all(n["reserved"]["cpu_millis"] == 0 for n in nodes)
    wait_for("the executions' shares to be released", released, 10)


async def events_of(c, id, timeout_s=60):
    """Every kept event of execution `id`, read from the log's start, up to its end."""
    url = c.url.replace("http://", "ws://", 1) + "/v1/events?after=0"
    return [e for e in await read_until_finished(c, url, id, timeout_s) if e["execution"] == id]


def load_with_a_profile_stops_early_and_keeps_its_measure(c):
    c.start(2)
    target = Target()
    profile = {"pattern": {"type": "constant", "rps": 40, "duration_s": 60}, "description": "steady"}
    answer = requests.put(c.url + "/v1/load/profiles/steady", json=profile, headers=c.headers(), timeout=10)
    check(answer.status_code == 204, f"PUT the profile: {answer.status_code} {answer.text}")
    answer = c.post("/v1/load", {"url": target.url, "profile": "steady"})
    check(answer.status_code == 201, f"POST /v1/load: {answer.status_code} {answer.text}")
    id = answer.json()["id"]

    def measuring():
        live = c.get(f"/v1/executions/{id}/metrics").json().get("live") or {}
        return live.get("requests", 0) >= 40
    wait_for("the running load's live figures to count requests", measuring, 30)
    answer = c.post(f"/v1/load/{id}/stop", {})
    check(answer.status_code == 202, f"stop: {answer.status_code} {answer.text}")
    view = c.wait_state(id, timeout_s=30)
    check(view["state"] == "cancelled", f"a stopped load ends cancelled: {json.dumps(view, indent=1)}")
    metrics = c.get(f"/v1/executions/{id}/metrics").json()
    totals = metrics.get("totals") or {}
    check((totals.get("requests") or 0) >= 40, f"the partial measure is kept: {json.dumps(metrics, indent=1)}")
    check(totals["requests"] <= target.requests, f"no more requests counted than the target saw ({target.requests})")
    check(len(metrics["series"]) >= 1, f"per-second figures: {json.dumps(metrics, indent=1)}")
    events = asyncio.run(events_of(c, id))
    figures = [e for e in events if e["type"] == "load"]
    check(len(figures) >= 1 and "rps" in figures[-1]["data"], f"the load's figures went out live: {[e['type'] for e in events]}")
    target.server.shutdown()


def mutual_tls_cluster(c):
    """A service and three nodes on mutual TLS with `dtest certs`' files: the nodes register over
    TLS showing their certificate, the service reaches them over TLS showing its own, and an
    execution completes. A client without a certificate, or with one another CA signed, is
    refused in the handshake; plain HTTP to the TLS port gets a 400 that says to use https://."""
    certs, other = c.path("certs"), c.path("other")
    for d in (certs, other):
        subprocess.run([c.dtest, "certs", d], check=True, capture_output=True, timeout=30)
    tls = ["--tls-cert", f"{certs}/server.pem", "--tls-key", f"{certs}/server-key.pem",
           "--tls-client-ca", f"{certs}/ca.pem", "--cacert", f"{certs}/ca.pem"]
    c.verify, c.cert = f"{certs}/ca.pem", (f"{certs}/client.pem", f"{certs}/client-key.pem")
    url = c.start_serve(extra=tls)
    check(url.startswith("https://127.0.0.1:"), f"serve over TLS says {url}")
    for i in range(3):
        c.start_node(f"node-{i}", extra=tls)
    c.wait_nodes(3)
    urls = [n["url"] for n in c.get("/v1/nodes").json()]
    check(all(u.startswith("https://") for u in urls), f"the nodes registered at {urls}")
    id = c.submit(scenario("mtls", 6, ["sh", "-c", "exit 0"]))
    view = c.wait_succeeded(id)
    check_counts(view, 6)

    def refused(**kwargs):
        try:
            answer = requests.get(url + "/v1/nodes", headers=c.headers(), timeout=10, **kwargs)
        except requests.exceptions.SSLError as e:
            return str(e)
        raise Failed(f"{kwargs}: answered {answer.status_code}, expected a refused handshake")
    refused(verify=c.verify)
    refused(verify=c.verify, cert=(f"{other}/client.pem", f"{other}/client-key.pem"))
    # A service of another CA is not trusted either.
    refused(verify=f"{other}/ca.pem", cert=c.cert)
    plain = requests.get(url.replace("https://", "http://") + "/v1/nodes", headers=c.headers(), timeout=10)
    check(plain.status_code == 400 and "use https://" in plain.json()["error"],
          f"plain HTTP to the TLS port: {plain.status_code} {plain.text}")
    # A node, too, answers only clients its CA signed for.
    try:
        requests.get(urls[0] + "/v1/info", headers=c.headers(), timeout=10, verify=c.verify,
                     cert=(f"{other}/client.pem", f"{other}/client-key.pem"))
    except requests.exceptions.SSLError:
        pass
    else:
        raise Failed("a node answered a client of another CA")


def json_logs_carry_ids_and_never_tokens(c):
    """`--log-format json` on the service, its nodes and `dtest run`: every stderr line is a JSON
    object; every line about a task attempt carries the execution, task and attempt ids as
    fields; and no token appears in any log, report or error answer."""
    logs = ["--log-format", "json", "--log-level", "debug"]
    c.start_serve(extra=logs)
    for i in range(3):
        c.start_node(f"node-{i}", extra=logs)
    c.wait_nodes(3)
    id = c.submit(scenario("logged", 6, ["sh", "-c", "exit 0"]))
    check_counts(c.wait_succeeded(id), 6)
    failing = c.submit(scenario("failing", 3, ["sh", "-c", "exit 3"]))
    c.wait_state(failing)
    wrong = requests.get(c.url + "/v1/nodes", headers={"Authorization": f"Bearer {c.token}x"}, timeout=10)
    check(wrong.status_code == 401, f"a wrong token: {wrong.status_code}")
    answers = [wrong.text, c.get(f"/v1/executions/{id}/report").text, c.get(f"/v1/executions/{failing}").text,
               c.get("/v1/nodes").text, c.get("/v1/cluster").text]
    # `dtest run` against the same nodes, logging as JSON, with every report written.
    path = c.path("run.json")
    with open(path, "w") as f:
        json.dump(scenario("direct", 3, ["sh", "-c", "exit 0"]), f)
    urls = ",".join(n["url"] for n in c.get("/v1/nodes").json())
    run = subprocess.run([c.dtest, "run", path, "--nodes", urls, "--token-file", c.token_file, "--log-format", "json",
                          "--log-level", "info", "--out", c.path("report.json"), "--html", c.path("report.html"),
                          "--junit", c.path("junit.xml")], capture_output=True, text=True, timeout=120)
    check(run.returncode == 0, f"dtest run: {run.returncode} {run.stderr[-2000:]}")
    run_lines = run.stderr.splitlines()

    def records(lines, who):
        parsed = []
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                raise Failed(f"{who}: a log line that is not JSON: {line!r}")
            check(isinstance(record, dict) and "level" in record and "fields" in record, f"{who}: {line!r}")
            parsed.append(record)
        return parsed

    about_attempts = 0
    for name, proc, prefix in c.procs:
        with open(prefix + ".err") as f:
            for record in records(f.read().splitlines(), name):
                fields = dict(record.get("span") or {}, **record["fields"])
                if "attempt" in record["fields"].get("message", "") or "attempt" in fields:
                    about_attempts += 1
                    for key in ("execution", "task", "attempt"):
                        check(key in fields, f"{name}: a line about an attempt without `{key}`: {record}")
    node_attempts = about_attempts
    for record in records(run_lines, "dtest run"):
        fields = dict(record.get("span") or {}, **record["fields"])
        if record["fields"]["message"] in ("task attempt assigned", "task ended"):
            about_attempts += 1
            for key in ("execution", "task", "attempt"):
                check(key in fields, f"dtest run: a line about an attempt without `{key}`: {record}")
    # 6 + 3 attempts started and ended on the nodes, and the run's own 3 assigned and ended.
    print(f"attempt lines: nodes+serve {node_attempts}, run {about_attempts - node_attempts}")
    check(node_attempts >= 2 * 9, f"the nodes logged {node_attempts} lines about attempts")
    check(about_attempts >= node_attempts + 6, f"dtest run logged {about_attempts - node_attempts} about attempts")

    texts = answers + [run.stdout, run.stderr]
    for root, _, files in os.walk(c.dir):
        for file in files:
            if file.endswith((".err", ".out", ".json", ".html", ".xml", ".jsonl")):
                with open(os.path.join(root, file), errors="replace") as f:
                    texts.append(f.read())
    for token in (c.token, c.read_token):
        leaks = [t[:200] for t in texts if token in t]
        check(not leaks, f"a token in {len(leaks)} of {len(texts)} logs, reports or answers: {leaks}")


def readme_block(c, heading):
    """Runs the first `sh` block of the README's section `heading` as printed, in the cluster's
    directory with the scenarios copied in; its exit code, stdout and stderr."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with open(os.path.join(root, "README.md")) as f:
        readme = f.read()
    section = readme.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    shutil.copytree(os.path.join(root, "scenarios"), c.path("scenarios"), dirs_exist_ok=True)
    env = dict(os.environ, DTEST_E2E_TAG=c.tag, PATH=os.path.dirname(c.dtest) + os.pathsep + os.environ["PATH"])
    # Into files, not pipes: the service and node it starts in the background keep them open.
    with open(c.path("readme.out"), "w") as out, open(c.path("readme.err"), "w") as err:
        code = subprocess.run(["bash", "-euo", "pipefail", "-c", block], stdout=out, stderr=err, timeout=120,
                              env=env, cwd=c.dir).returncode
    stdout, stderr = (open(c.path(f"readme.{x}")).read() for x in ("out", "err"))
    print(stdout[-5000:])
    print(stderr[-5000:])
    check(code == 0, f"the README's commands exited {code}")
    return subprocess.CompletedProcess([], code, stdout, stderr)


def readme_service_commands_work_as_printed(c):
    """The README's `dtest serve` walkthrough, run as printed (fixed ports 8700 and 7071)."""
    run = readme_block(c, "The service")
    check(re.search(r'\{"id":"sharded-tests-[0-9a-f]+"\}', run.stdout), "the submit printed the execution's id")
    check('"state":"succeeded"' in run.stdout, "the execution succeeded")
    check('"healthy":1' in run.stdout, "GET /v1/cluster counts the node healthy")
    check('"code":"forbidden"' in run.stdout, "the read-only token's write was refused")


def readme_mutual_tls_commands_work_as_printed(c):
    """The README's mutual-TLS cluster (Security), run as printed (fixed ports 8710 and 7080): the
    node registers over mutual TLS, a client with the cluster's certificate gets the cluster's
    health, one without is refused in the handshake, plain HTTP is told to use https://, and the
    logs written to a file are plain text, without a terminal's colour codes."""
    run = readme_block(c, "Security")
    check('"healthy":1' in run.stdout, "the client with a certificate sees the node healthy")
    check("refused\n" in run.stdout, "the client without one was refused")
    check("certificate required" in run.stderr, "curl says the service required a certificate")
    check("this port speaks TLS: use https://" in run.stdout, "plain HTTP was told to use https://")
    check("node registered" in run.stderr, "the service logged the node's registration")
    check("\x1b[" not in run.stderr, "logs to a file carry no colour codes")


CASES = {f.__name__: f for f in [
    submit_and_poll,
    websocket_events_in_order_and_resume,
    node_sigkill_mid_execution,
    serve_sigkill_and_restart,
    read_only_token_cannot_write,
    broadcast_reaches_running_commands,
    schemathesis_against_live_openapi,
    two_executions_share_nodes_without_over_commit,
    load_with_a_profile_stops_early_and_keeps_its_measure,
    readme_service_commands_work_as_printed,
    readme_mutual_tls_commands_work_as_printed,
    mutual_tls_cluster,
    json_logs_carry_ids_and_never_tokens,
]}


def main():
    if len(sys.argv) != 3 or sys.argv[2] not in CASES:
        print(f"usage: {sys.argv[0]} PATH-TO-DTEST {{{','.join(CASES)}}}", file=sys.stderr)
        return 2
    cluster = Cluster(sys.argv[1])
    started = time.monotonic()
    try:
        CASES[sys.argv[2]](cluster)
        print(f"{sys.argv[2]}: passed in {time.monotonic() - started:.1f} s")
        return 0
    except Exception:
        print(f"{sys.argv[2]}: FAILED after {time.monotonic() - started:.1f} s")
        traceback.print_exc(file=sys.stdout)
        cluster.logs()
        return 1
    finally:
        cluster.kill_all()
        shutil.rmtree(cluster.dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
