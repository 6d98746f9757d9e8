#!/usr/bin/env python3
"""Fuzzing of the real daemons end to end. Run by cli/tests/it/fuzz.rs, one case per process:

    python3 cli/tests/fuzz_e2e.py PATH-TO-DTEST CASE

`node_and_serve` starts a `dtest node` and a `dtest serve` and sends them DTEST_FUZZ_REQUESTS
requests (default 100,000, half each) with the right token, from DTEST_FUZZ_PROCESSES processes
(default 2) of DTEST_FUZZ_THREADS keep-alive threads (default 4): for every route, valid bodies,
their mutations (fields deleted, duplicated, retyped; numbers at the edges of every integer type;
long, empty, control and broken-UTF-8 strings; nesting 10,000 deep; bodies of megabytes), random
JSON and random bytes, under wrong methods, content types, paths, ids and query strings, and a few
WebSocket handshakes. Some node requests are sequences that reach what a request starts: a plan of
mutated entries whose instances are then assigned (its commands and loads run), and a peer that
floods exactly-once frames past its window. Nothing valid runs anywhere: the valid bodies' URLs
point at a closed port, the service has no reachable node, and the node's commands are `true` and
`sleep` from a PATH holding only those.

It passes when no answer is a 5xx (every request here is a client's mistake or a valid request;
the service's storage codes are the one exception, by code), every answer comes within 10 s (an
exchange: plus the wait it asked for), both processes answer a valid request every 2 s and at the
end, neither exited nor printed a panic, and the peak RSS (VmHWM) of each stays under 150 MiB.

`hostile_node` points `dtest run` at fake nodes (a socket server in this script that plays the
node's side of the protocol) answering with huge bodies with and without a length, endless
bodies, malformed JSON, JSON of the wrong shape, absurd node info, load results with absurd counts,
histograms and seconds, floods of frames, a slow drip, silence and reset connections. It passes
when each run ends within 120 s with a report or a clear error, never panics, and stays under the
150 MiB RSS budget (a run reads no reply longer than its loads can report).

The seed is printed; DTEST_FUZZ_SEED replays it (with one process of one thread exactly: with
several, which request goes first depends on timing); DTEST_FUZZ_DUMP=DIR keeps each offending
request whole. Exit status 0 means the case passed; otherwise the reason, the first offending
requests and the processes' logs are on stdout.
"""

import base64
import collections
import http.client
import json
import multiprocessing
import os
import queue
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse
import uuid
import zlib

from e2e import Failed, check, kill_tagged, print_logs, wait_for

RSS_BUDGET_KB = 150 * 1024
# Every answer must come within this; an exchange may also wait as long as it asked (≤ 30 s).
REQUEST_TIMEOUT_S = 10.0
EXCHANGE_WAIT_MAX_S = 30.0
# The daemons' body limits (node/src/api.rs BODY_MAX, serve/src/api.rs BODY_MAX).
NODE_BODY_MAX = 16 << 20
SERVE_BODY_MAX = 4 << 20
# The only 5xx a request may get here: the service's store failing (docs/api.md), by code.
STORAGE_CODES = {"storage_full", "storage_busy", "storage_corrupt", "storage_read_only", "storage_io"}
# A port nothing listens on: the valid bodies' URLs point there, so nothing valid runs anywhere.
CLOSED_URL = "http://127.0.0.1:9"


# ---- processes ------------------------------------------------------------------------------


class Procs:
    """Processes started in a temporary directory, each tagged so that none (nor what they start)
    outlives the case; stopped with SIGTERM, then SIGKILL."""

    def __init__(self, dtest):
        self.dtest = dtest
        self.dir = tempfile.mkdtemp(prefix="dtest-fuzz-")
        self.tag = uuid.uuid4().hex
        self.token = "fuzz-" + uuid.uuid4().hex
        self.token_file = self.path("token")
        with open(self.token_file, "w") as f:
            f.write(self.token + "\n")
        self.procs = []  # (name, Popen, log prefix)

    def path(self, *parts):
        return os.path.join(self.dir, *parts)

    def spawn(self, name, argv, env=None, first_line=True):
        prefix = self.path(f"{name}.{len(self.procs)}")
        env = dict(env or os.environ, DTEST_E2E_TAG=self.tag)
        with open(prefix + ".out", "w") as out, open(prefix + ".err", "w") as err:
            proc = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env, cwd=self.dir)
        self.procs.append((name, proc, prefix))
        if not first_line:
            return proc, None

        def line():
            if proc.poll() is not None:
                raise Failed(f"{name} exited with {proc.returncode} before saying where it listens")
            with open(prefix + ".out") as f:
                text = f.read()
            return text.split("\n", 1)[0] if "\n" in text else None

        return proc, wait_for(f"{name}'s first stdout line", line, 30)

    def stderr(self, proc):
        for _, p, prefix in self.procs:
            if p is proc:
                with open(prefix + ".err", errors="replace") as f:
                    return f.read()
        return ""

    def stop_all(self):
        for _, proc, _ in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for _, proc, _ in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        kill_tagged(self.tag)

    def logs(self):
        print_logs(prefix for _, _, prefix in self.procs)


def memory_kb(pid):
    """(VmRSS, VmHWM) of `pid` in KiB, from /proc."""
    figures = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                figures[key] = int(value.split()[0])
    return figures.get("VmRSS", 0), figures.get("VmHWM", 0)


def panicked(text):
    return "panicked" in text


# ---- JSON with holes: values that serialize to any text, valid JSON or not ------------------------


class Raw:
    """A value written out as this text, as is: duplicate keys, bad numbers, deep nesting."""

    def __init__(self, text):
        self.text = text


def dump(value):
    """`value` as JSON text, `Raw` parts written as they are."""
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, dict):
        return "{" + ",".join(json.dumps(str(k)) + ":" + dump(v) for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(dump(v) for v in value) + "]"
    return json.dumps(value)


EDGE_NUMBERS = [
    "0", "-0", "1", "-1", "0.5", "-0.5", "1e308", "-1e308", "1e999", "1e-999", "2.5e-324",
    "255", "256", "65535", "65536", "4294967295", "4294967296", "2147483648", "-2147483649",
    "9007199254740993", "9223372036854775807", "9223372036854775808", "-9223372036854775808",
    "-9223372036854775809", "18446744073709551615", "18446744073709551616",
    "123456789012345678901234567890123456789", "1.7976931348623157e308", "0.1e1", "1E2",
]
BAD_NUMBERS = ["NaN", "Infinity", "-Infinity", "+1", "01", "1.", ".5", "0x10", "1e", "--1", "1_000"]
EDGE_STRINGS = [
    "", " ", "NaN", "Infinity", "-Infinity", "null", "true", "0", "-1", "1e308", "\u0000", "\u0000abc",
    "a\u0000b", "../../../../etc/passwd", "..", ".", "/", "%00", "%2e%2e", "{index}", "{count}",
    "http://", "https://", "http://[::1", "http://127.0.0.1:99999/", "ws://127.0.0.1:9/", "file:///etc/passwd",
    "ü漢字🦀", "\u202e\u0041", "\ufeff", "\uffff", "\r\n", "\t", "a" * 63, "a" * 64, "a" * 65, "a" * 128,
    "a" * 129, "x" * 4096, "x" * 65537, "Z" * 1000, "snake_case", "at_least_once", "exactly_once",
    "fire_and_forget", "command", "load", "constant", "json", "html", "junit", "<script>alert(1)</script>",
    "' OR 1=1; --", "\\", "\"", "💥" * 100,
]
BAD_STRINGS = ['"\\ud800"', '"\\udc00\\ud800"', '"\\u00"', '"\\x41"', '"unterminated', '"\x01"', '"tab\there"']


def random_string(rng):
    r = rng.random()
    if r < 0.5:
        return rng.choice(EDGE_STRINGS)
    if r < 0.8:
        return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789-_.:/ ") for _ in range(rng.randint(0, 40)))
    return "".join(chr(rng.randint(1, 0x2FFFF)) for _ in range(rng.randint(0, 20))).encode(
        "utf-8", "surrogatepass").decode("utf-8", "replace")


def random_number(rng):
    r = rng.random()
    if r < 0.6:
        return Raw(rng.choice(EDGE_NUMBERS))
    if r < 0.7:
        return Raw(rng.choice(BAD_NUMBERS))
    if r < 0.85:
        return rng.randint(-(1 << 70), 1 << 70)
    return rng.uniform(-1e6, 1e6)


def random_json(rng, depth=0):
    r = rng.random()
    if depth > 4 or r < 0.45:
        return rng.choice([None, True, False, random_number(rng), random_string(rng), random_number(rng)])
    if r < 0.7:
        return [random_json(rng, depth + 1) for _ in range(rng.randint(0, 5))]
    return {random_string(rng): random_json(rng, depth + 1) for _ in range(rng.randint(0, 5))}


def deep(rng, levels):
    if rng.random() < 0.5:
        return Raw("[" * levels + "]" * levels)
    return Raw('{"a":' * levels + "1" + "}" * levels)


def huge_string(rng, size):
    return rng.choice(["x", "é", "漢", "\u0000", "🦀"]) * (size // 4)


def paths_of(value, prefix=()):
    """Every place in `value`: tuples of keys and indices."""
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from paths_of(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from paths_of(v, prefix + (i,))


def get_at(value, path):
    for p in path:
        value = value[p]
    return value


def set_at(value, path, new):
    if not path:
        return new
    get_at(value, path[:-1])[path[-1]] = new
    return value


def copy(value):
    if isinstance(value, dict):
        return {k: copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [copy(v) for v in value]
    return value


def mutate(rng, value, big_ok):
    """One structural change to a copy of `value`."""
    value = copy(value)
    paths = list(paths_of(value))
    path = rng.choice(paths)
    here = get_at(value, path)
    op = rng.random()
    if op < 0.12 and path:  # delete
        parent = get_at(value, path[:-1])
        if isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent.pop(path[-1])
        return value
    if op < 0.2 and isinstance(here, dict) and here:  # duplicate a key
        key = rng.choice(list(here))
        other = dump(random_json(rng)) if rng.random() < 0.5 else dump(here[key])
        body = dump(here)
        return set_at(value, path, Raw("{" + json.dumps(key) + ":" + other + "," + body[1:]))
    if op < 0.3:  # retype
        return set_at(value, path, random_json(rng))
    if op < 0.48:  # an edge number
        return set_at(value, path, random_number(rng))
    if op < 0.6:  # an edge string
        if rng.random() < 0.2:
            return set_at(value, path, Raw(rng.choice(BAD_STRINGS)))
        return set_at(value, path, random_string(rng))
    if op < 0.68 and isinstance(here, dict):  # an unknown field
        here[random_string(rng) or "extra"] = random_json(rng)
        return value
    if op < 0.75 and isinstance(here, list):  # more, fewer or many elements
        r = rng.random()
        if r < 0.3:
            here.clear()
        elif here and r < 0.7:
            here.extend(copy(rng.choice(here)) for _ in range(rng.choice([1, 10, 1000])))
        else:
            here.append(random_json(rng))
        return value
    if op < 0.8:  # deep nesting
        return set_at(value, path, deep(rng, rng.choice([100, 129, 1000, 10_000])))
    if op < 0.84 and big_ok:  # long strings
        return set_at(value, path, huge_string(rng, rng.choice([70_000, 200_000, 1 << 20])))
    if op < 0.9:
        return set_at(value, path, rng.choice([None, [], {}, [here], {"value": here}]))
    return set_at(value, path, random_json(rng))


def mutate_text(rng, data):
    """A byte-level change to serialized JSON."""
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.random()
        if not data:
            data = bytearray(rng.randbytes(rng.randint(1, 10)))
        i = rng.randrange(len(data))
        if op < 0.3:
            data[i] = rng.randrange(256)
        elif op < 0.5:
            del data[i:]
        elif op < 0.7:
            data[i:i] = rng.randbytes(rng.randint(1, 8))
        elif op < 0.85:
            j = min(len(data), i + rng.randint(1, 64))
            data[i:i] = data[i:j] * rng.randint(1, 50)
        else:
            for a, b in [(b'"', b""), (b":", b","), (b"{", b"["), (b"true", b"tru"), (b"}", b"")]:
                if rng.random() < 0.3:
                    data = bytearray(bytes(data).replace(a, b, 1))
    return bytes(data)


# ---- what to send -----------------------------------------------------------------------------


class Pools:
    """Names the fuzzer has seen come back (plan ids, sessions, executions, allocations, ...), so
    that requests name existing things as often as made-up ones."""

    def __init__(self):
        self.lock = threading.Lock()
        self.values = collections.defaultdict(list)

    def add(self, kind, value, keep=200):
        with self.lock:
            values = self.values[kind]
            if value not in values:
                values.append(value)
                if len(values) > keep:
                    values.pop(0)

    def pick(self, rng, kind, default):
        with self.lock:
            values = self.values[kind]
            return rng.choice(values) if values else default


def fuzzed_id(rng):
    r = rng.random()
    if r < 0.15:
        return rng.choice(["%00", "..", "%2e%2e", "%2F", "a%2Fb", ".", "%", "%zz", "%FF%FE", "~", "%20"])
    if r < 0.25:
        return "x" * rng.choice([200, 5_000, 70_000])
    if r < 0.35:
        return rng.choice(["0", "-1", "18446744073709551615", "18446744073709551616", "1e308", "NaN"])
    if r < 0.45:
        return "a/../../b"
    return urllib.parse.quote(random_string(rng), safe="")[:2000] or "empty"


def quoted(text):
    return urllib.parse.quote(text, safe="-._~:")


class Route:
    """One route of a daemon's API, and how to make a valid request of it."""

    def __init__(self, method, path, body=None, query=None, ids=None):
        self.method = method
        self.path = path  # with {id} for one id
        self.body = body  # a function (rng, pools) -> a valid body, or None
        self.query = query  # a function (rng) -> a query string, or None
        self.ids = ids  # the pool kind `{id}` draws from

    def __repr__(self):
        return f"{self.method} {self.path}"


def plan_entries(rng):
    """A plan's valid entries: commands that end at once, loads of a few requests to a closed port."""
    return [
        {"name": "true", "count": rng.randint(1, 4), "work": {"command": {"argv": ["true"]}}},
        {"name": "sleep", "count": 1, "work": {"command": {"argv": ["sleep", "0"], "env": {"FUZZ": "1"}, "cwd": "."}}},
        {"name": "load", "count": 1, "work": {"load": {
            "url": CLOSED_URL + "/", "timeout_ms": 200, "connections": 1, "method": "GET",
            "headers": {"x-fuzz": "1"}, "body": None, "http_version": "1.1", "start_ms": 0,
            "rate": {"pattern": {"pattern": rng.choice([
                {"type": "constant", "rps": 2.0, "duration_ms": 1000},
                {"type": "ramp", "from_rps": 1.0, "to_rps": 5.0, "duration_ms": 1000},
                {"type": "random", "min_rps": 1.0, "max_rps": 5.0, "change_every_ms": 100, "duration_ms": 1000},
            ]), "seed": 1, "index": 0, "of": 1}}}}},
        {"name": "max", "count": 1, "work": {"load": {
            "url": CLOSED_URL + "/", "timeout_ms": 200, "connections": 1, "rate": {"max": {"duration_ms": 200}}}}},
    ]


# Valid values that ask for a lot of work (up to the scenario format's limits): the fuzzer keeps
# its valid plans small, as it keeps its executions on unreachable nodes. Values past the limits
# stay: the node must refuse them.
HEAVY = {"connections": (64, 100_000), "rps": (100, 1e7), "from_rps": (100, 1e7), "to_rps": (100, 1e7),
         "min_rps": (100, 1e7), "max_rps": (100, 1e7), "count": (16, 1_000_000)}


def lighten(value):
    """`value` with every valid but heavy field of [`HEAVY`] made light."""
    if isinstance(value, list):
        return [lighten(v) for v in value]
    if not isinstance(value, dict):
        return value
    out = {}
    for k, v in value.items():
        if k in HEAVY:
            number = v
            if isinstance(v, Raw):
                try:
                    number = float(v.text)
                except ValueError:
                    number = None
            low, high = HEAVY[k]
            if isinstance(number, (int, float)) and not isinstance(number, bool) and low < number <= high:
                v = low
        out[k] = lighten(v)
    return out


def node_routes(pools):
    def plan(rng, pools):
        entries = plan_entries(rng)
        rng.shuffle(entries)
        return {"id": plan_id(rng, pools), "entries": entries[:rng.randint(0, 4)], "elapsed_ms": rng.randint(0, 5000)}

    def plan_id(rng, pools):
        return pools.pick(rng, "plan", "fz-0") if rng.random() < 0.7 else f"fz-{rng.randint(0, 9)}"

    def frame(rng, pools, plan):
        session = pools.pick(rng, f"session:{plan}", rng.choice([0, 1, 1 << 40]))
        body = rng.choice([
            {"assign": {"task": rng.randint(1, 500), "attempt": rng.randint(1, 3), "work": rng.randint(0, 5),
                        "timeout_ms": rng.choice([100, 1000, 5000])}},
            {"cancel": {"task": rng.randint(1, 500), "attempt": rng.randint(1, 3)}},
            {"result_accepted": {"task": rng.randint(1, 500), "attempt": rng.randint(1, 3)}},
        ])
        if rng.random() < 0.2:
            return {"ack": {"session": session, "id": rng.randint(1, 1000)}}
        mode = rng.choice(["at_least_once", "exactly_once", "fire_and_forget"])
        return {"data": {"session": session, "id": rng.randint(0, 100_000), "floor": rng.randint(0, 10),
                         "mode": mode, "body": body}}

    def exchange(rng, pools):
        plan = plan_id(rng, pools)
        frames = [frame(rng, pools, plan) for _ in range(rng.choice([0, 1, 2, 5]))]
        return {"plan": plan, "frames": frames, "wait_ms": rng.choice([0, 0, 0, 10, 200])}

    def rule(rng):
        low = rng.choice([0, 0, 5])
        return {"cut": rng.random() < 0.2, "loss": rng.choice([0.0, 0.1, 1.0]), "latency_min_ms": low,
                "latency_max_ms": low + rng.choice([0, 0, 10])}

    def faults(rng, pools):
        body = {"link": {"to_node": rule(rng), "to_orchestrator": rule(rng)}}
        if rng.random() < 0.7:
            body["plan"] = plan_id(rng, pools)
        return body

    def message(rng, pools):
        return {"id": f"m-{rng.randint(0, 1000)}", "from": "fuzz",
                "mode": rng.choice(["at_least_once", "exactly_once", "fire_and_forget"]),
                "body": rng.choice([{"signal": "go"}, 1, "text", None, [1, 2, 3]])}

    return [
        Route("GET", "/v1/info"),
        Route("PUT", "/v1/plan", body=plan),
        Route("DELETE", "/v1/plans/{id}", ids="plan"),
        Route("POST", "/v1/exchange", body=exchange),
        Route("PUT", "/v1/faults", body=faults),
        Route("POST", "/v1/messages", body=message),
        Route("GET", "/metrics"),
    ]


def scenario(rng):
    """A small valid scenario of command tasks (it never runs: its nodes are unreachable)."""
    return {
        "name": f"fz-{rng.randint(0, 99)}", "description": "fuzzed", "duration_s": rng.choice([5, 30]),
        "cluster": {"groups": [{"name": "g", "count": 1, "resources": {"cpu_millis": 1000, "memory_mb": 1024}}]},
        "workload": {"tasks": [{"name": "t", "count": rng.randint(1, 3), "kind": "command",
                                "requires": {"cpu_millis": 100, "memory_mb": 16},
                                "command": {"argv": ["true"], "timeout_s": 5}}]},
        "faults": [], "expect": {"all_tasks_complete": True},
    }


def pattern(rng):
    return rng.choice([
        {"type": "constant", "rps": 1, "duration_s": 1},
        {"type": "ramp", "from_rps": 1, "to_rps": 5, "duration_s": 2},
        {"type": "spike", "base_rps": 1, "spike_rps": 10, "spike_at_s": 1, "spike_duration_s": 1, "duration_s": 3},
    ])


def serve_routes(pools):
    def node_info(rng):
        return {"version": "0.1.0", "incarnation": rng.randint(0, 10), "group": "g", "region": None, "zone": None,
                "capabilities": [], "resources": {"cpu_millis": 1000, "memory_mb": 1024, "disk_mb": 0, "net_mbps": 0,
                                                  "gpus": 0, "custom": {}},
                "resources_detected": False, "allow_commands": True, "plans": 0}

    def register(rng, pools):
        body = {"name": f"fz-node-{rng.randint(0, 30)}", "url": f"{CLOSED_URL}/{rng.randint(0, 3)}",
                "labels": {"zone": "a"}}
        if rng.random() < 0.9:
            body["info"] = node_info(rng)
        return body

    def nodes(rng, pools):
        return [pools.pick(rng, "node", "fz-node-0") if rng.random() < 0.5 else CLOSED_URL]

    def submit(rng, pools):
        body = {"scenario": scenario(rng), "seed": rng.randint(0, 100)}
        if rng.random() < 0.7:
            body["nodes"] = nodes(rng, pools)
        return body

    def load(rng, pools):
        body = {"url": CLOSED_URL + "/", "method": "GET", "connections": 1, "timeout_ms": 100}
        if rng.random() < 0.5:
            body["pattern"] = pattern(rng)
        else:
            body["profile"] = pools.pick(rng, "profile", "p0")
        if rng.random() < 0.7:
            body["nodes"] = nodes(rng, pools)
        return body

    def profile(rng, pools):
        return {"pattern": pattern(rng), "description": "fuzzed"}

    def rules(rng, pools):
        metric = rng.choice(["score", "phi", "round_trip_ms", "health", "nodes_dead"])
        rule = {"name": f"r{rng.randint(0, 5)}", "metric": metric, "comparison": rng.choice([">", ">=", "<", "<="]),
                "threshold": rng.choice([0, 1, 50, 99]), "for_s": rng.choice([0, 1]),
                "severity": rng.choice(["info", "warning", "critical"])}
        return {"rules": [rule] * rng.randint(0, 3)}

    def allocate(rng, pools):
        body = {"resources": {"cpu_millis": rng.choice([1, 100, 1000]), "memory_mb": 16}, "holder": "fuzz"}
        if rng.random() < 0.5:
            body["node"] = pools.pick(rng, "node", "fz-node-0")
        return body

    def message(rng, pools):
        body = {"node": pools.pick(rng, "node", "fz-node-0"), "body": {"hello": rng.randint(0, 9)},
                "mode": "fire_and_forget"}
        if rng.random() < 0.5:
            body["id"] = f"m-{rng.randint(0, 99)}"
        return body

    def broadcast(rng, pools):
        return {"body": {"all": 1}, "mode": "fire_and_forget"}

    def page(rng):
        return urllib.parse.urlencode({"limit": rng.choice([0, 1, 10, 1000, 5000]), "offset": rng.choice([0, 1, 99])})

    def format_(rng):
        return "format=" + rng.choice(["json", "html", "junit", "pdf", ""])

    def after(rng):
        return "after=" + rng.choice(["0", "1", "999999999", "-1", "x"])

    return [
        Route("GET", "/healthz"),
        Route("GET", "/openapi.json"),
        Route("POST", "/v1/nodes", body=register),
        Route("GET", "/v1/nodes"),
        Route("GET", "/v1/nodes/{id}", ids="node"),
        Route("POST", "/v1/executions", body=submit),
        Route("GET", "/v1/executions", query=page),
        Route("GET", "/v1/executions/{id}", ids="execution"),
        Route("POST", "/v1/executions/{id}/cancel", ids="execution"),
        Route("GET", "/v1/executions/{id}/report", query=format_, ids="execution"),
        Route("GET", "/v1/executions/{id}/metrics", ids="execution"),
        Route("POST", "/v1/load", body=load),
        Route("POST", "/v1/load/{id}/stop", ids="execution"),
        Route("GET", "/v1/load/profiles"),
        Route("PUT", "/v1/load/profiles/{id}", body=profile, ids="profile"),
        Route("GET", "/v1/cluster"),
        Route("GET", "/v1/alerts"),
        Route("PUT", "/v1/alerts/rules", body=rules),
        Route("GET", "/v1/alerts/rules"),
        Route("POST", "/v1/alerts/{id}/ack", ids="alert"),
        Route("POST", "/v1/allocations", body=allocate),
        Route("DELETE", "/v1/allocations/{id}", ids="allocation"),
        Route("GET", "/v1/utilization"),
        Route("POST", "/v1/messages", body=message),
        Route("POST", "/v1/messages/broadcast", body=broadcast),
        Route("GET", "/v1/connections"),
        Route("GET", "/v1/events", query=after),
        Route("GET", "/metrics"),
    ]


METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE", "FOO", "get"]
CONTENT_TYPES = [None, "text/plain", "application/x-www-form-urlencoded", "application/json; charset=utf-16",
                 "application/jsonx", "multipart/form-data; boundary=x", "application/json;", "*/*", "\u00e9"]


class Request:
    def __init__(self, method, path, body, headers, route, timeout, unread):
        self.method, self.path, self.body, self.headers = method, path, body, headers
        # Whether the server may answer before it reads the body (over the limit, or refused by
        # method, path or token before any handler runs): it may then close the connection with
        # the body still coming, which the client sees as a reset.
        self.route, self.timeout, self.unread = route, timeout, unread
        # Whether the names in it and its answer go into the pools for other requests to use.
        self.learn = True

    def describe(self):
        body = self.body[:300] if self.body else b""
        more = f" (+{len(self.body) - 300} bytes)" if self.body and len(self.body) > 300 else ""
        headers = {k: v for k, v in self.headers.items() if k != "Authorization"}
        return f"{self.method} {self.path[:300]} {headers} {body!r}{more}"


def make_request(rng, target):
    route = rng.choice(target.routes)
    method = route.method if rng.random() < 0.92 else rng.choice(METHODS)
    path = route.path
    refused = method != route.method
    if route.ids:
        known = target.pools.pick(rng, route.ids, None)
        if known is not None and rng.random() < 0.6:
            segment = quoted(str(known))
        else:
            segment = fuzzed_id(rng)
            refused = True  # a path the router may refuse (`..`, `/`, bad escapes, too long)
        path = path.replace("{id}", segment)
    r = rng.random()
    if r < 0.03:
        path = path + rng.choice(["/", "//", "/..", "/%00", "/extra", "?", "#frag"])
        refused = True
    elif r < 0.05:
        path = "/" + "/".join(fuzzed_id(rng) for _ in range(rng.randint(1, 4)))
        refused = True
    elif r < 0.06:
        path = path.replace("/v1/", rng.choice(["/v2/", "//v1/", "/V1/", "/v1/../v1/", "/v1%2F"]), 1)
        refused = True
    if route.query and rng.random() < 0.7:
        path += "?" + route.query(rng)
    elif rng.random() < 0.05:
        path += "?" + rng.choice(["a=1&a=2", "limit=1&limit=x", "%00=%00", "=&=&", "x" * 3000, "after=1&after=2"])

    headers = {}
    r = rng.random()
    if r < 0.985:
        headers["Authorization"] = f"Bearer {target.token}"
    elif r < 0.99:
        headers["Authorization"] = "Bearer " + target.token[:-1]
        refused = True
    elif r < 0.995:
        headers["Authorization"] = rng.choice(["Basic abc", "Bearer", "bearer " + target.token, "Bearer  "])
        refused = True
    else:
        refused = True

    body = None
    body_max = target.body_max
    if route.body:
        valid = route.body(rng, target.pools)
        r = rng.random()
        if r < 0.06:
            body = rng.randbytes(rng.choice([0, 1, 10, 100, 2000]))
        elif r < 0.12:
            body = dump(random_json(rng)).encode()
        elif r < 0.32:
            body = dump(valid).encode()
        elif r < 0.8:
            value = valid
            for _ in range(rng.choice([1, 1, 1, 2, 3])):
                value = mutate(rng, value, big_ok=rng.random() < 0.05)
            body = dump(value).encode("utf-8", "surrogatepass")
        elif r < 0.95:
            body = mutate_text(rng, dump(valid).encode())
        elif r < 0.99:
            body = dump(deep(rng, rng.choice([129, 1000, 10_000]))).encode()
        elif r < 0.998:
            size = rng.choice([body_max // 4, body_max // 2, body_max - 1000])
            body = dump({"padding": "x" * size, **valid} if isinstance(valid, dict) else valid).encode()
        else:
            body = b'{"x": "' + b"y" * (body_max + 10) + b'"}'
        ctype = "application/json" if rng.random() < 0.93 else rng.choice(CONTENT_TYPES)
        if ctype:
            headers["Content-Type"] = ctype
        refused = refused or ctype != "application/json"
    elif rng.random() < 0.03:
        body = rng.randbytes(rng.randint(0, 500))
        headers["Content-Type"] = "application/json"

    timeout = REQUEST_TIMEOUT_S
    if route.path == "/v1/exchange" and body:
        try:
            wait_ms = json.loads(body).get("wait_ms", 0)
            if isinstance(wait_ms, int) and wait_ms > 0:
                timeout += min(wait_ms / 1000, EXCHANGE_WAIT_MAX_S)
        except (ValueError, AttributeError, RecursionError):
            pass
    unread = body is not None and (len(body) > body_max or refused or route.body is None)
    return Request(method, path, body, headers, route, timeout, unread)


# ---- sending ----------------------------------------------------------------------------------


# Requests this thread sent.
THREAD = threading.local()


class Target:
    def __init__(self, name, url, token, routes, pools, body_max, shared=None):
        parsed = urllib.parse.urlparse(url)
        self.name, self.host, self.port = name, parsed.hostname, parsed.port
        self.token, self.routes, self.pools, self.body_max = token, routes, pools, body_max
        self.lock = threading.Lock()
        self.statuses = collections.Counter()
        self.per_route = collections.Counter()
        self.sent = 0
        self.problems = []  # (what, request description, answer)
        # Requests sent by every process, by target: [node, serve].
        self.shared, self.index = shared, 0 if name == "node" else 1
        self.slowest_s = 0.0
        self.events = collections.Counter()  # what the stateful sequences reached
        self.slow = []  # requests answered after more than 2 s
        self.route_s = collections.Counter()  # seconds spent waiting for answers, by route

    def record(self, request, status, elapsed_s):
        with self.lock:
            self.sent += 1
            self.statuses[status] += 1
            self.per_route[repr(request.route)] += 1
            self.route_s[repr(request.route)] += elapsed_s
            self.slowest_s = max(self.slowest_s, elapsed_s)
        THREAD.sent = getattr(THREAD, "sent", 0) + 1
        if self.shared is not None:
            with self.shared.get_lock():
                self.shared[self.index] += 1

    def count(self, what):
        with self.lock:
            self.events[what] += 1

    def problem(self, what, request, answer):
        with self.lock:
            self.problems.append((what, request.describe() if request else "", answer[:1000]))
        # DTEST_FUZZ_DUMP=DIR keeps each offending request whole, to send again by hand.
        dump_dir = os.environ.get("DTEST_FUZZ_DUMP")
        if dump_dir and request:
            os.makedirs(dump_dir, exist_ok=True)
            name = os.path.join(dump_dir, f"{self.name}-{len(self.problems)}-{os.getpid()}")
            with open(name + ".json", "w") as f:
                json.dump({"what": what, "method": request.method, "path": request.path,
                           "headers": {k: v for k, v in request.headers.items() if k != "Authorization"}}, f)
            with open(name + ".body", "wb") as f:
                f.write(request.body or b"")


def learn(target, request, status, data):
    """Remembers the names an answer gives (executions, allocations, alerts, plans' sessions)."""
    pools = target.pools
    if status >= 300 or not data:
        return
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):
        return
    path = request.route.path
    if target.name == "node":
        if path == "/v1/exchange" and isinstance(value, dict):
            try:
                plan = json.loads(request.body)["plan"]
            except (ValueError, KeyError, TypeError, RecursionError):
                return
            for frame in value.get("frames", []):
                session = (frame.get("data") or {}).get("session")
                if session is not None:
                    pools.add(f"session:{plan}", session, keep=4)
        return
    if isinstance(value, dict) and "id" in value and path in ("/v1/executions", "/v1/load"):
        pools.add("execution", value["id"])
    elif path == "/v1/executions" and isinstance(value, list):
        for e in value[:5]:
            pools.add("execution", e.get("id"))
    elif path == "/v1/allocations" and isinstance(value, dict):
        pools.add("allocation", value.get("id"))
    elif path == "/v1/nodes" and isinstance(value, dict):
        pools.add("node", value.get("id"))
    elif path == "/v1/alerts" and isinstance(value, dict):
        for a in value.get("history", [])[:5]:
            pools.add("alert", a.get("id"))


def remember_sent(target, request, status):
    """What a successful write created: a plan id the node now holds, a profile's name."""
    if status >= 300 or not request.body:
        return
    try:
        value = json.loads(request.body)
    except (ValueError, RecursionError):
        return
    if not isinstance(value, dict):
        return
    if target.name == "node" and request.route.path == "/v1/plan" and isinstance(value.get("id"), str):
        target.pools.add("plan", value["id"], keep=16)
    elif target.name == "serve" and request.route.path == "/v1/load/profiles/{id}":
        target.pools.add("profile", urllib.parse.unquote(request.path.rsplit("/", 1)[-1].split("?")[0]))


class Connection:
    """One keep-alive connection, reopened whenever the server closes it."""

    def __init__(self, target):
        self.target = target
        self.conn = None

    def send(self, request):
        """(status, body) or raises OSError / http.client.HTTPException. A connection the server
        closed while it was idle (as HTTP/1.1 allows, after an answer that did not read the whole
        request) fails the next request before any answer: that one is sent again, once, on a new
        connection."""
        reused = self.conn is not None
        try:
            return self.send_once(request)
        except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
            if not reused:
                raise
        return self.send_once(request)

    def send_once(self, request):
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.target.host, self.target.port, timeout=request.timeout)
        self.conn.timeout = request.timeout
        if self.conn.sock is not None:
            self.conn.sock.settimeout(request.timeout)
        try:
            self.conn.request(request.method, request.path, body=request.body, headers=request.headers)
            response = self.conn.getresponse()
            data = response.read()
            if response.will_close:
                self.close()
            return response.status, data
        except BaseException:
            self.close()
            raise

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def exchange_one(target, connection, request):
    """Sends `request`, records its answer and judges it; (status, body), or None without one."""
    started = time.monotonic()
    try:
        status, data = connection.send(request)
    except (TimeoutError, socket.timeout):
        elapsed = time.monotonic() - started
        target.record(request, "timeout", elapsed)
        target.problem(f"no answer within {request.timeout:.0f} s", request, "")
        return None
    except (ConnectionError, http.client.HTTPException, OSError) as e:
        elapsed = time.monotonic() - started
        if request.unread and len(request.body) > 65536:
            # Refused before it was read: the server answered and closed, and the rest of the
            # body met a closed socket (HTTP/1.1 lets a server do so).
            target.record(request, "reset (unread body)", elapsed)
            return None
        target.record(request, "reset", elapsed)
        target.problem(f"the connection failed: {type(e).__name__}: {e}", request, "")
        return None
    elapsed = time.monotonic() - started
    target.record(request, status, elapsed)
    if elapsed > 2 and len(target.slow) < 10:
        target.slow.append(f"{elapsed:.1f} s, {status}: {request.describe()[:300]}")
    if elapsed > request.timeout:
        target.problem(f"answered after {elapsed:.1f} s", request, data.decode("utf-8", "replace"))
    if status >= 500:
        code = None
        try:
            code = json.loads(data)["error"]["code"]
        except (ValueError, KeyError, TypeError):
            pass
        if not (target.name == "serve" and status == 503 and code in STORAGE_CODES):
            target.problem(f"status {status}", request, data.decode("utf-8", "replace"))
    if request.learn:
        learn(target, request, status, data)
        remember_sent(target, request, status)
    return status, data


def websocket_upgrade(rng, target):
    """A real WebSocket handshake on /v1/events, some garbage frames, and a close."""
    started = time.monotonic()
    key = base64.b64encode(rng.randbytes(16)).decode()
    query = rng.choice(["", "?after=0", "?after=18446744073709551615", "?after=x"])
    request = (f"GET /v1/events{query} HTTP/1.1\r\nHost: {target.host}:{target.port}\r\n"
               f"Authorization: Bearer {target.token}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()
    fake = Request("GET", f"/v1/events{query} (WebSocket upgrade)", None, {}, Route("GET", "/v1/events (upgrade)"),
                   REQUEST_TIMEOUT_S, False)
    try:
        with socket.create_connection((target.host, target.port), timeout=REQUEST_TIMEOUT_S) as s:
            s.sendall(request)
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = s.recv(4096)
                if not chunk:
                    break
                head += chunk
            status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/1.1 ") else "garbled"
            if status == 101:
                # Client frames must be masked; send a masked text frame, then garbage, then close.
                mask = rng.randbytes(4)
                payload = b"hello"
                s.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
                s.sendall(rng.randbytes(rng.randint(1, 64)))
                s.settimeout(1)
                try:
                    s.recv(65536)
                except OSError:
                    pass
    except (socket.timeout, TimeoutError):
        target.record(fake, "timeout", time.monotonic() - started)
        target.problem("the WebSocket handshake got no answer", fake, "")
        return
    except OSError as e:
        target.record(fake, "reset", time.monotonic() - started)
        target.problem(f"the WebSocket handshake failed: {e}", fake, "")
        return
    target.record(fake, status, time.monotonic() - started)
    if status != 101 and query != "?after=x":
        target.problem(f"a WebSocket handshake got {status}", fake, head[:300].decode("latin-1"))


def json_request(target, method, path, value, timeout=REQUEST_TIMEOUT_S):
    headers = {"Authorization": f"Bearer {target.token}", "Content-Type": "application/json"}
    body = None if value is None else dump(value).encode("utf-8", "surrogatepass")
    route = next(r for r in target.routes if r.method == method and r.path == re.sub(r"/plans/.*", "/plans/{id}", path))
    return Request(method, path, body, headers, route, timeout, False)


def session_of(answer):
    """The session (the plan's incarnation) the node's frames in an exchange's answer carry."""
    if not answer or answer[0] != 200:
        return None
    try:
        frames = json.loads(answer[1])["frames"]
        return next(f["data"]["session"] for f in frames if "data" in f)
    except (ValueError, KeyError, TypeError, StopIteration):
        return None


def run_mutated_plan(rng, target, connection):
    """A new plan of mutated entries, with every one of its first instances assigned: what the
    node starts from a plan it took (commands, loads) meets the mutations. 4 to 6 requests."""
    entries = plan_entries(rng)
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(entries))
        if rng.random() < 0.5:
            entries[i]["work"] = mutate(rng, entries[i]["work"], big_ok=False)
            continue
        # A number at an edge: what the node computes with (connections, rates, times) meets it.
        work = entries[i]["work"]
        numbers = [path for path in paths_of(work) if path and isinstance(get_at(work, path), (int, float))
                   and not isinstance(get_at(work, path), bool)]
        if numbers:
            path = rng.choice(numbers)
            if isinstance(get_at(work, path), float):
                edge = rng.choice([0.0, -1.0, 5e-324, 1e-300, 1e15, 1e308, 1.7976931348623157e308, -1e308])
            else:
                edge = rng.choice([0, 1, 2**31 - 1, 2**32 - 1, 2**53 + 1, 2**63 - 1, 2**64 - 1])
            set_at(work, path, edge)
    plan = {"id": f"deep-{rng.randrange(1 << 40)}", "entries": lighten(entries), "elapsed_ms": 0}
    answer = exchange_one(target, connection, json_request(target, "PUT", "/v1/plan", plan))
    target.count(f"mutated plans answered {answer[0] if answer else None}")
    if not answer or answer[0] != 204:
        return
    hello = exchange_one(target, connection, json_request(target, "POST", "/v1/exchange", {"plan": plan["id"]}))
    session = session_of(hello)
    if session is None:
        return
    frames = [{"data": {"session": session, "id": i + 1, "floor": 0, "mode": "at_least_once",
                        "body": {"assign": {"task": i + 1, "attempt": 1, "work": i, "timeout_ms": 2000}}}}
              for i in range(6)]
    answer = exchange_one(target, connection, json_request(target, "POST", "/v1/exchange",
                                                           {"plan": plan["id"], "frames": frames, "wait_ms": 300}))
    if answer and answer[0] == 200:
        target.count("mutated plans run")
        for frame in json.loads(answer[1]).get("frames", []):
            body = (frame.get("data") or {}).get("body") or {}
            if "finished" in body:
                outcome = body["finished"]["outcome"]
                target.count(f"their attempts ended {outcome if isinstance(outcome, str) else next(iter(outcome))}")
    if rng.random() < 0.5:
        exchange_one(target, connection, json_request(target, "DELETE", f"/v1/plans/{plan['id']}", None))


# core/src/protocol/delivery.rs RECEIVE_WINDOW_MAX: a receiver takes exactly-once ids at most this
# far above the sender's floor, whatever the sender sends.
RECEIVE_WINDOW_MAX = 16_384


def flood_exactly_once(rng, target, connection):
    """A peer that breaks the protocol: 20,000 exactly-once frames with new ids and a floor that
    never moves, to a plan of its own. The node must not remember (nor acknowledge) ids past its
    receive window, or such a peer grows its memory without bound. 4 requests."""
    plan = f"flood-{rng.randrange(1 << 40)}"
    # Its plan is its own: no other request may move its floor.
    put = json_request(target, "PUT", "/v1/plan", {"id": plan, "entries": []})
    put.learn = False
    answer = exchange_one(target, connection, put)
    if not answer or answer[0] != 204:
        return
    session = session_of(exchange_one(target, connection, json_request(target, "POST", "/v1/exchange", {"plan": plan})))
    if session is None:
        return
    frames = ",".join(
        f'{{"data":{{"session":{session},"id":{i},"floor":0,"mode":"exactly_once",'
        f'"body":{{"result_accepted":{{"task":{i},"attempt":1}}}}}}}}' for i in range(1, 20_001))
    request = json_request(target, "POST", "/v1/exchange", None)
    request.body = f'{{"plan":{json.dumps(plan)},"frames":[{frames}],"wait_ms":0}}'.encode()
    answer = exchange_one(target, connection, request)
    target.count(f"floods of exactly-once frames answered {answer[0] if answer else None}")
    if answer and answer[0] == 200:
        acked = [f["ack"]["id"] for f in json.loads(answer[1])["frames"] if "ack" in f]
        if acked and max(acked) >= RECEIVE_WINDOW_MAX:
            target.problem(f"the node acknowledged exactly-once id {max(acked)}, past its receive window of "
                           f"{RECEIVE_WINDOW_MAX} ids: it remembers what a peer sends without bound", request, "")
    exchange_one(target, connection, json_request(target, "DELETE", f"/v1/plans/{plan}", None))


def worker(index, seed, targets, quota, stop, errors):
    rng = random.Random(f"{seed}/{index}")
    connections = {t.name: Connection(t) for t in targets}
    try:
        THREAD.sent = 0
        turn = 0
        while THREAD.sent < quota and not stop.is_set():
            target = targets[turn % len(targets)]
            turn += 1
            r = rng.random()
            if target.name == "serve" and r < 0.002:
                websocket_upgrade(rng, target)
            elif target.name == "node" and r < 0.02:
                run_mutated_plan(rng, target, connections["node"])
            elif target.name == "node" and r < 0.021:
                flood_exactly_once(rng, target, connections["node"])
            else:
                exchange_one(target, connections[target.name], make_request(rng, target))
    except Exception:
        errors.append(traceback.format_exc())
        stop.set()
    finally:
        for c in connections.values():
            c.close()


def fuzz_process(index, seed, urls, token, quota, threads, stop, sent, results):
    """One process of fuzzing threads (Python threads share one core; processes add cores). Puts
    what its requests got on `results`."""
    node_pools, serve_pools = Pools(), Pools()
    targets = [Target("node", urls["node"], token, node_routes(node_pools), node_pools, NODE_BODY_MAX, sent),
               Target("serve", urls["serve"], token, serve_routes(serve_pools), serve_pools, SERVE_BODY_MAX, sent)]
    errors = []
    workers = [threading.Thread(target=worker, args=(index * threads + i, seed, targets,
                                                     quota // threads + (i < quota % threads), stop, errors))
               for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    results.put({"errors": errors, "targets": {t.name: {
        "sent": t.sent, "statuses": dict(t.statuses), "per_route": dict(t.per_route), "problems": t.problems,
        "events": dict(t.events), "slow": t.slow, "route_s": dict(t.route_s),
        "slowest_s": t.slowest_s} for t in targets}})


# ---- cases --------------------------------------------------------------------------------------


def authorized_get(url, path, token, timeout=REQUEST_TIMEOUT_S):
    parsed = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {token}"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def seed_of():
    seed = os.environ.get("DTEST_FUZZ_SEED")
    return int(seed) if seed else random.SystemRandom().randrange(1 << 32)


def node_and_serve(p):
    seed = seed_of()
    total = int(os.environ.get("DTEST_FUZZ_REQUESTS", "100000"))
    # The bar, which a local run may lower to look at one thing, CI never.
    check(not os.environ.get("CI") or total >= 100_000, f"CI fuzzes with at least 100000 requests, not {total}")
    processes_n = int(os.environ.get("DTEST_FUZZ_PROCESSES", "2"))
    threads = int(os.environ.get("DTEST_FUZZ_THREADS", "4"))
    print(f"seed {seed} (replay: DTEST_FUZZ_SEED={seed} DTEST_FUZZ_PROCESSES=1 DTEST_FUZZ_THREADS=1 python3 "
          f"{sys.argv[0]} DTEST node_and_serve); {total} requests from {processes_n} processes of {threads} threads",
          flush=True)

    # Commands the node may start: `true` and `sleep` only, from a PATH of just those two, so that
    # whatever a mutation turns a command into finds nothing else to run.
    bin_dir = p.path("bin")
    os.makedirs(bin_dir)
    for program in ("true", "sleep"):
        os.symlink(shutil.which(program), os.path.join(bin_dir, program))
    work = p.path("work")
    os.makedirs(work)
    node_env = dict(os.environ, PATH=bin_dir)
    node, line = p.spawn("node", [p.dtest, "node", "--listen", "127.0.0.1:0", "--token-file", p.token_file,
                                  "--allow-commands", "--workdir", work, "--drain-timeout-s", "1",
                                  "--resources", "cpu_millis=2000,memory_mb=2048"], env=node_env)
    check(line.startswith("dtest node listening on "), f"node's first line: {line!r}")
    node_url = line.rsplit(" ", 1)[1].strip()
    serve, line = p.spawn("serve", [p.dtest, "serve", "--listen", "127.0.0.1:0", "--token-file", p.token_file,
                                    "--data", p.path("data"), "--rate-limit", "0"])
    check(line.startswith("dtest serve listening on "), f"serve's first line: {line!r}")
    serve_url = line.rsplit(" ", 1)[1].strip()
    processes = {"node": node, "serve": serve}
    probes = {"node": (node_url, "/v1/info"), "serve": (serve_url, "/v1/cluster")}
    wait_for("the node's /v1/info", lambda: authorized_get(node_url, "/v1/info", p.token)[0] == 200, 10)
    wait_for("the service's /v1/cluster", lambda: authorized_get(serve_url, "/v1/cluster", p.token)[0] == 200, 10)

    # Forked before this process starts threads; daemonic, so that a failed case does not wait for them.
    fork = multiprocessing.get_context("fork")
    stop = fork.Event()
    sent = fork.Array("q", 2)  # requests sent so far, to the node and to the service
    results = fork.Queue()
    urls = {"node": node_url, "serve": serve_url}
    quotas = [total // processes_n + (i < total % processes_n) for i in range(processes_n)]
    fuzzers = [fork.Process(target=fuzz_process, args=(i, seed, urls, p.token, quotas[i], threads, stop, sent, results),
                            daemon=True)
               for i in range(processes_n)]
    started = time.monotonic()
    for f in fuzzers:
        f.start()

    peaks = {name: 0 for name in processes}
    probe_problems = []
    probes_done = collections.Counter()
    next_probe = last_report = time.monotonic()
    summaries = []
    while len(summaries) < len(fuzzers):
        try:
            summaries.append(results.get(timeout=0.5))
            continue
        except queue.Empty:
            pass
        if any(f.exitcode not in (None, 0) for f in fuzzers):
            stop.set()
            raise Failed(f"a fuzzing process died: {[f.exitcode for f in fuzzers]}")
        now = time.monotonic()
        if now >= next_probe:
            # Every couple of seconds: each process alive, answering a valid request, its peak RSS.
            next_probe = now + 2
            for name, proc in processes.items():
                if proc.poll() is not None:
                    stop.set()
                    raise Failed(f"{name} exited with {proc.returncode} mid-run")
                peaks[name] = max(peaks[name], memory_kb(proc.pid)[1])
                url, path = probes[name]
                probe_started = time.monotonic()
                try:
                    status, body = authorized_get(url, path, p.token)
                except OSError as e:
                    status, body = f"{type(e).__name__}: {e}", b""
                probes_done[name] += 1
                if status != 200:
                    probe_problems.append(f"{name}: GET {path} mid-run answered {status} after "
                                          f"{time.monotonic() - probe_started:.1f} s: {body[:300]!r}")
        if now - last_report >= 15:
            last_report = now
            print(f"  {now - started:.0f} s: node {sent[0]}, serve {sent[1]} requests "
                  f"({(sent[0] + sent[1]) / (now - started):.0f}/s); peak RSS node {peaks['node'] // 1024} MiB, "
                  f"serve {peaks['serve'] // 1024} MiB", flush=True)
    duration = time.monotonic() - started
    for f in fuzzers:
        f.join(timeout=10)

    class Summary:
        def __init__(self, name):
            self.name, self.sent, self.slowest_s, self.problems = name, 0, 0.0, []
            self.statuses, self.per_route = collections.Counter(), collections.Counter()
            self.events = collections.Counter()
            self.slow = []
            self.route_s = collections.Counter()
            self.routes = node_routes(None) if name == "node" else serve_routes(None)

    targets = [Summary("node"), Summary("serve")]
    errors = []
    for summary in summaries:
        errors += summary["errors"]
        for t in targets:
            part = summary["targets"][t.name]
            t.sent += part["sent"]
            t.statuses.update(part["statuses"])
            t.per_route.update(part["per_route"])
            t.events.update(part["events"])
            t.slow += part["slow"]
            t.route_s.update(part["route_s"])
            t.problems += part["problems"]
            t.slowest_s = max(t.slowest_s, part["slowest_s"])

    # Still serving, still alive, never panicked.
    final, split = {}, {}
    for name, proc in processes.items():
        check(proc.poll() is None, f"{name} exited with {proc.returncode}")
        url, path = probes[name]
        status, body = authorized_get(url, path, p.token)
        final[name] = status
        peaks[name] = max(peaks[name], memory_kb(proc.pid)[1])
        with open(f"/proc/{proc.pid}/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        # The debug binary's own pages are most of the file-backed part: a release build has less.
        split[name] = f"now {fields['RssAnon'].strip()} anonymous + {fields['RssFile'].strip()} file-backed"
    health = authorized_get(serve_url, "/healthz", p.token)[0]

    print(f"\nfuzzed for {duration:.1f} s ({(targets[0].sent + targets[1].sent) / duration:.0f} requests/s), seed {seed}")
    for t in targets:
        statuses = ", ".join(f"{k}: {v}" for k, v in sorted(t.statuses.items(), key=lambda kv: str(kv[0])))
        print(f"{t.name}: {t.sent} requests; statuses {statuses}; peak RSS {peaks[t.name] / 1024:.1f} MiB "
              f"({split[t.name]}); "
              f"slowest answer {t.slowest_s:.2f} s; probes {probes_done[t.name]}")
        print(f"  per route: {dict(sorted(t.per_route.items()))}")
        if t.events:
            print(f"  sequences: {dict(sorted(t.events.items()))}")
        busiest = ", ".join(f"{r} {sec:.0f} s" for r, sec in t.route_s.most_common(5))
        print(f"  most time waiting on: {busiest}")
        for slow in t.slow[:10]:
            print(f"  slow: {slow}")
    check(not errors, "the fuzzer itself failed:\n" + "\n".join(errors))
    sent_in_all = targets[0].sent + targets[1].sent
    check(sent_in_all >= total, f"{sent_in_all} requests were sent, not the {total} asked for")
    problems = [(t.name, *x) for t in targets for x in t.problems]
    for name, what, request, answer in problems[:30]:
        print(f"PROBLEM {name}: {what}\n  request: {request}\n  answer: {answer[:500]}")
    check(not problems, f"{len(problems)} requests were answered wrongly (the first are above)")
    check(not probe_problems, "probes failed:\n" + "\n".join(probe_problems[:20]))
    check(final == {"node": 200, "serve": 200} and health == 200, f"the final probes: {final}, /healthz {health}")
    for name, proc in processes.items():
        check(not panicked(p.stderr(proc)), f"{name} panicked (its stderr is below)")
        check(peaks[name] < RSS_BUDGET_KB, f"{name}'s peak RSS {peaks[name] / 1024:.1f} MiB is over the budget "
              f"of {RSS_BUDGET_KB // 1024} MiB")
    # Every route was reached.
    for t in targets:
        missing = [repr(r) for r in t.routes if t.per_route[repr(r)] == 0]
        check(not missing, f"{t.name}: routes never fuzzed: {missing}")
    p.stop_all()
    for name, proc in processes.items():
        check(not panicked(p.stderr(proc)), f"{name} panicked while stopping (its stderr is below)")


# ---- a hostile node ------------------------------------------------------------------------------


U64_MAX = 2**64 - 1
# core::run::REPLY_BYTES_CAP: the longest reply the orchestrator reads from a node whatever the
# scenario. A run reads less: what its loads can report (core::run::reply_bytes_max), some MiB here.
REPLY_BYTES_MAX = 256 << 20


def histogram_text(counts, digits=2, lowest=1, highest=3_600_000_000, cookie=0x1C849313, payload=None):
    """An HdrHistogram in the V2 deflate format, base64: `counts` (index: count) as zigzag LEB128
    varints after the 40-byte header, with whatever header fields are asked for."""
    body = bytearray()
    for count in counts:
        z = (count << 1) ^ (count >> 63)
        while True:
            byte, z = z & 0x7F, z >> 7
            body.append(byte | (0x80 if z else 0))
            if not z:
                break
    header = struct.pack(">Iiiiqqd", cookie, len(body) if payload is None else payload, 0, digits,
                         lowest, highest, 1.0)
    inner = zlib.compress(header + bytes(body))
    return base64.b64encode(struct.pack(">Ii", 0x1C849314, len(inner)) + inner).decode()


def valid_histogram(count=1):
    from hdrh.histogram import HdrHistogram
    h = HdrHistogram(1, 3_600_000_000, 2)
    h.record_value(1000, count)
    return h.encode().decode()


def load_result(kind):
    """A `Finished` frame's load result, absurd as `kind` says."""
    ok = valid_histogram()
    second = {"t": 0, "requests": 1, "errors": 0, "dropped": 0, "histogram": ok, "uncorrected": ok}
    status = {k: 1 for k in ["1xx", "2xx", "3xx", "4xx", "5xx", "timeout", "connect", "io"]}
    result = {"requests": 1, "errors": 0, "dropped": 0, "late": 0, "status": status, "histogram": ok,
              "uncorrected": ok, "seconds": [second]}
    if kind == "overflowing_counts":
        result.update(requests=U64_MAX, errors=U64_MAX, dropped=U64_MAX, late=U64_MAX,
                      status={k: U64_MAX for k in status})
        result["seconds"] = [dict(second, t=t, requests=U64_MAX, errors=U64_MAX, dropped=U64_MAX) for t in (0, 1)]
    elif kind == "histogram_counts_at_the_limit":
        big = valid_histogram(2**62)
        result.update(histogram=big, uncorrected=big, seconds=[dict(second, histogram=big, uncorrected=big)])
    elif kind == "far_seconds":
        result["seconds"] = [dict(second, t=t) for t in (604_800, 604_801, U64_MAX)]
    elif kind == "many_seconds":
        result["seconds"] = [dict(second, t=t) for t in range(0, 200_000)]
    elif kind == "absurd_histogram_headers":
        bad = [histogram_text([1], digits=5), histogram_text([1], highest=2**62), histogram_text([1], lowest=0),
               histogram_text([1], payload=2**31 - 1), histogram_text([1], cookie=0), histogram_text([1] * 100_000),
               "", "!!!!", base64.b64encode(b"\x1c\x84\x93\x14" + os.urandom(64)).decode(),
               "A" * (1024 * 1024 + 4)]
        result["histogram"] = bad[int(time.monotonic() * 1000) % len(bad)]
        result["seconds"] = [dict(second, histogram=b) for b in bad[:6]]
    return result


class FakeNode:
    """A loopback HTTP/1.1 server that plays a node daemon (as far as `dtest run` can tell) and
    misbehaves as its mode says, counting what it was asked."""

    def __init__(self, mode):
        self.mode = mode
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.lock = threading.Lock()
        self.asked = collections.Counter()
        self.incarnation = 1_700_000_000_000
        self.next_id = 1
        self.pending = []  # frames to send with the next exchange answer
        self.answered = set()  # (task, attempt) already finished
        self.acked_max = 0  # the highest exactly-once id the orchestrator acknowledged
        self.flood_next = 2
        self.closed = False
        threading.Thread(target=self.accept, daemon=True).start()

    def close(self):
        self.closed = True
        self.listener.close()

    def accept(self):
        while not self.closed:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(conn,), daemon=True).start()

    def serve(self, conn):
        conn.settimeout(60)
        reader = conn.makefile("rb")
        try:
            while not self.closed:
                line = reader.readline(65536)
                if not line:
                    return
                method, path, _ = line.decode("latin-1").split(" ", 2)
                length = 0
                while True:
                    header = reader.readline(65536)
                    if header in (b"\r\n", b"\n", b""):
                        break
                    name, _, value = header.decode("latin-1").partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value.strip())
                body = reader.read(length) if length else b""
                with self.lock:
                    self.asked[f"{method} {path}"] += 1
                if not self.answer(conn, method, path, body):
                    return
        except (OSError, ValueError):
            return
        finally:
            try:
                conn.close()
            except OSError:
                pass

    # ---- what it answers ----

    def reply(self, conn, status, body=b"", content_type="application/json", extra=""):
        reason = {200: "OK", 204: "No Content", 409: "Conflict", 500: "Internal Server Error"}.get(status, "X")
        head = f"HTTP/1.1 {status} {reason}\r\ncontent-type: {content_type}\r\ncontent-length: {len(body)}\r\n{extra}\r\n"
        conn.sendall(head.encode() + body)
        return True

    def info(self):
        info = {"version": "0.1.0", "incarnation": 0, "group": "g", "region": None, "zone": None, "capabilities": [],
                "resources": {"cpu_millis": 4000, "memory_mb": 4096, "disk_mb": 0, "net_mbps": 0, "gpus": 0,
                              "custom": {}},
                "resources_detected": False, "allow_commands": True, "plans": 0}
        if self.mode == "info_absurd":
            info.update(incarnation=U64_MAX, plans=2**32 - 1, capabilities=["c" * 10_000] * 100, group="g",
                        region="r" * 100_000, zone="\u0000")
            info["resources"] = {"cpu_millis": U64_MAX, "memory_mb": U64_MAX, "disk_mb": U64_MAX,
                                 "net_mbps": U64_MAX, "gpus": U64_MAX, "custom": {f"k{i}": U64_MAX for i in range(8)}}
        if self.mode == "info_many_resources":
            info["resources"]["custom"] = {f"k{i}": i for i in range(10_000)}
        return json.dumps(info).encode()

    def hostile(self, conn, how):
        """Answers in one of the ways no node should; False: the connection is over."""
        if how == "huge_declared":
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1099511627776\r\n\r\n{")
            time.sleep(0.5)
            return False
        if how == "endless":
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n")
            chunk = b" " * (1 << 20)
            frame = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
            sent = 0
            while sent < REPLY_BYTES_MAX + (64 << 20):  # past the bound: the client must hang up first
                conn.sendall(frame)
                sent += len(chunk)
            with self.lock:
                self.asked["endless reply not refused by its end"] += 1
            return False
        if how == "endless_unframed":
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n")
            chunk = b"[" * (1 << 20)
            sent = 0
            while sent < REPLY_BYTES_MAX + (64 << 20):
                conn.sendall(chunk)
                sent += len(chunk)
            with self.lock:
                self.asked["endless reply not refused by its end"] += 1
            return False
        if how == "malformed":
            return self.reply(conn, 200, b'{"frames": [{"data": {"session": 1, "id": ' + os.urandom(32))
        if how == "wrong_shape":
            shapes = [b"[]", b'{"frames": {}}', b'{"frames": [1, 2]}', b'{"frames": [{"data": {"session": "x"}}]}',
                      b'{"frames": null}', b'"frames"', b'{"frames": [], "extra": 1}', b"null", b"1e999",
                      b'{"version": 1}', b'{"frames": [{"ack": {"session": -1, "id": 1e400}}]}']
            with self.lock:
                n = sum(self.asked.values())
            return self.reply(conn, 200, shapes[n % len(shapes)])
        if how == "slow_drip":
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n")
            for _ in range(1000):
                conn.sendall(b" ")
                time.sleep(1)
            return False
        if how == "reset":
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return False
        if how == "error_huge":
            return self.reply(conn, 500, b"e" * (32 << 20), content_type="text/plain")
        if how == "silent":
            time.sleep(120)
            return False
        raise AssertionError(how)

    def answer(self, conn, method, path, body):
        mode = self.mode
        if path == "/v1/info":
            if mode.startswith("info_") and mode not in ("info_absurd", "info_many_resources"):
                return self.hostile(conn, mode[len("info_"):])
            return self.reply(conn, 200, self.info())
        if path == "/v1/plan":
            if mode.startswith("plan_"):
                return self.hostile(conn, mode[len("plan_"):])
            return self.reply(conn, 204)
        if path.startswith("/v1/plans/") or path == "/v1/faults":
            return self.reply(conn, 204)
        if path != "/v1/exchange":
            return self.reply(conn, 404, b'{"error": "no such endpoint"}')
        if mode.startswith("exchange_"):
            return self.hostile(conn, mode[len("exchange_"):])
        return self.reply(conn, 200, self.frames(json.loads(body)))

    def packet(self, body, mode="at_least_once"):
        with self.lock:
            id, self.next_id = self.next_id, self.next_id + 1
        return {"data": {"session": self.incarnation, "id": id, "floor": 1, "mode": mode, "body": body}}

    def frames(self, exchange):
        """Plays the agent: hello, and every assignment acknowledged, started and finished at once
        with the mode's load result; heartbeats carry the mode's live figures."""
        inc = self.incarnation
        out = [self.packet({"hello": {"incarnation": inc}})] if self.next_id < 4 else []
        running = []
        for frame in exchange.get("frames", []):
            if "ack" in frame:
                with self.lock:
                    self.acked_max = max(self.acked_max, frame["ack"]["id"])
                continue
            packet = frame["data"]
            if packet["mode"] != "fire_and_forget":
                out.append({"ack": {"session": packet["session"], "id": packet["id"]}})
            assign = packet["body"].get("assign")
            if not assign or (assign["task"], assign["attempt"]) in self.answered:
                continue
            task, attempt = assign["task"], assign["attempt"]
            self.answered.add((task, attempt))
            running.append([task, attempt])
            out.append(self.packet({"started": {"incarnation": inc, "task": task, "attempt": attempt}}))
            if self.mode != "live_overflow":
                kind = self.mode[len("load_"):] if self.mode.startswith("load_") else "valid"
                out.append(self.packet({"finished": {"incarnation": inc, "task": task, "attempt": attempt,
                                                     "outcome": "passed", "load": load_result(kind)}}))
        heartbeat = {"incarnation": inc, "metrics": {"cpu": 0.1, "memory": 0.1, "disk": 0.1, "network": 0.0,
                                                     "task_error_rate": 0.0}, "running": running}
        if self.mode == "live_overflow":
            heartbeat["running"] = [list(t) for t in sorted(self.answered)]
            live = {"requests": U64_MAX, "errors": U64_MAX, "dropped": U64_MAX,
                    "second": {"t": U64_MAX, "requests": U64_MAX, "errors": U64_MAX, "dropped": U64_MAX,
                               "histogram": valid_histogram(2**62), "uncorrected": valid_histogram(2**62)}}
            heartbeat["load"] = [[t, a, live] for t, a in sorted(self.answered)]
        if self.mode == "absurd_frames":
            heartbeat["metrics"] = {"cpu": 1e308, "memory": -1e308, "disk": 5e-324, "network": 1e308,
                                    "task_error_rate": -1.0}
            heartbeat["running"] = [[U64_MAX, 2**32 - 1]] * 1000
            out.append(self.packet({"finished": {"incarnation": inc, "task": U64_MAX, "attempt": 2**32 - 1,
                                                 "outcome": {"failed": "x" * 100_000}}}))
            out.append(self.packet({"hello": {"incarnation": U64_MAX}}))
            out.append(self.packet({"leaving": {"incarnation": inc + 1}}))
            out.append({"ack": {"session": U64_MAX, "id": U64_MAX}})
        out.append(self.packet({"heartbeat": heartbeat}, mode="fire_and_forget"))
        if self.mode == "flood":
            # Exactly-once frames with new ids, the floor never moving: the orchestrator must not
            # remember (nor acknowledge) ids past its receive window.
            with self.lock:
                first, self.flood_next = self.flood_next, self.flood_next + 20_000
            out += [{"data": {"session": inc, "id": i, "floor": 1, "mode": "exactly_once",
                              "body": {"heartbeat": heartbeat}}} for i in range(first, first + 20_000)]
        text = json.dumps({"frames": out}).encode()
        if self.mode == "many_frames":
            # 50,000 heartbeats more in every answer (written once: the orchestrator reads faster
            # than Python writes).
            if not hasattr(self, "many"):
                self.many = b"," + b",".join([json.dumps(self.packet({"heartbeat": heartbeat}, "fire_and_forget")).encode()] * 50_000)
            text = text[:-2] + self.many + b"]}"
        return text


# Each mode: a fake node misbehaving one way, and `dtest run` pointed at it.
HOSTILE_MODES = [
    "info_huge_declared", "info_endless", "info_endless_unframed", "info_malformed", "info_wrong_shape",
    "info_slow_drip", "info_reset", "info_error_huge", "info_absurd", "info_many_resources",
    "plan_huge_declared", "plan_slow_drip", "plan_reset", "plan_error_huge", "plan_silent",
    "exchange_huge_declared", "exchange_endless", "exchange_endless_unframed", "exchange_malformed",
    "exchange_wrong_shape", "exchange_slow_drip", "exchange_reset", "exchange_error_huge", "exchange_silent",
    "load_valid", "load_overflowing_counts", "load_histogram_counts_at_the_limit", "load_far_seconds",
    "load_many_seconds", "load_absurd_histogram_headers", "live_overflow", "absurd_frames", "flood", "many_frames",
]
# A run must end within this, whatever its node does.
HOSTILE_RUN_MAX_S = 120


def hostile_scenario(p):
    path = p.path("hostile.json")
    with open(path, "w") as f:
        json.dump({
            "name": "hostile", "description": "two load tasks on a node that misbehaves", "duration_s": 10,
            "cluster": {"groups": [{"name": "g", "count": 1, "resources": {"cpu_millis": 1000, "memory_mb": 512}}]},
            "targets": {"t": {"url": CLOSED_URL + "/"}},
            "workload": {"tasks": [{"name": "load", "count": 2, "kind": "load", "requires": {"cpu_millis": 100},
                                    "load": {"target": "t", "pattern": {"type": "constant", "rps": 1,
                                                                        "duration_s": 2}}}]},
        }, f)
    return path


def run_measured(argv, log_prefix, env, cwd, timeout_s):
    """Runs `argv` to its end (killed after `timeout_s`): (exit code, -9 if killed, seconds, peak
    RSS in KiB). Called in a small helper process (`HELPER`): the kernel's peak RSS of a child
    (wait4's ru_maxrss) starts from its parent's at the fork, so the parent must be small."""
    started = time.monotonic()
    with open(log_prefix + ".out", "w") as out, open(log_prefix + ".err", "w") as err:
        proc = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env, cwd=cwd)
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            code = os.waitstatus_to_exitcode(status)
            break
        if time.monotonic() - started > timeout_s:
            proc.kill()
            _, status, usage = os.wait4(proc.pid, 0)
            code = -9
            break
        time.sleep(0.05)
    proc.returncode = code
    return code, time.monotonic() - started, usage.ru_maxrss


def run_against(p, helper, mode, scenario_path):
    """`dtest run` on a fake node of `mode`: (mode, exit code (-9: killed), seconds, peak RSS in
    KiB, stderr, what the node was asked, the highest id the orchestrator acknowledged)."""
    node = FakeNode(mode)
    prefix = p.path(f"run-{mode}")
    argv = [p.dtest, "run", scenario_path, "--nodes", node.url, "--token-file", p.token_file, "--json"]
    env = dict(os.environ, DTEST_E2E_TAG=p.tag)
    code, elapsed, peak_kb = helper.apply(run_measured, (argv, prefix, env, p.dir, HOSTILE_RUN_MAX_S))
    node.close()
    with open(prefix + ".err", errors="replace") as f:
        stderr = f.read()
    if code in (0, 1):
        # A run that ended with a report says so: the report is on stdout, whole.
        try:
            with open(prefix + ".out") as f:
                json.load(f)["tasks"]
        except (ValueError, KeyError, TypeError) as e:
            stderr += f"\n(fuzz_e2e: exit {code} without a JSON report on stdout: {e})"
            code = f"{code} without a report"
    return mode, code, elapsed, peak_kb, stderr, dict(node.asked), node.acked_max


def hostile_node(p):
    """`dtest run` against nodes that misbehave in every way in HOSTILE_MODES (DTEST_FUZZ_MODES,
    comma-separated, picks some), several at a time."""
    modes = [m for m in os.environ.get("DTEST_FUZZ_MODES", ",".join(HOSTILE_MODES)).split(",") if m]
    unknown = [m for m in modes if m not in HOSTILE_MODES]
    check(not unknown, f"unknown modes {unknown}; the modes are {HOSTILE_MODES}")
    scenario_path = hostile_scenario(p)
    parallel = int(os.environ.get("DTEST_FUZZ_PARALLEL", "6"))
    # Fresh interpreters, small, started before this one grows with the fake nodes' replies.
    helper = multiprocessing.get_context("spawn").Pool(parallel)
    started = time.monotonic()
    results = []
    lock = threading.Lock()
    todo = list(modes)

    def runner():
        while True:
            with lock:
                if not todo:
                    return
                mode = todo.pop(0)
            result = run_against(p, helper, mode, scenario_path)
            with lock:
                results.append(result)

    runners = [threading.Thread(target=runner) for _ in range(parallel)]
    for r in runners:
        r.start()
    for r in runners:
        r.join()
    helper.close()
    helper.join()
    print(f"{len(results)} runs against hostile nodes in {time.monotonic() - started:.1f} s")
    failures = []
    for mode, code, elapsed, peak_kb, stderr, asked, acked_max in sorted(results):
        last = [line for line in stderr.strip().splitlines() if line.strip()][-1:] or [""]
        print(f"  {mode}: exit {code} after {elapsed:.1f} s, peak RSS {peak_kb / 1024:.1f} MiB; {last[0][:160]}")
        if code == -9:
            failures.append(f"{mode}: still running after {HOSTILE_RUN_MAX_S} s")
        elif code not in (0, 1, 2):
            failures.append(f"{mode}: exit code {code}, not one of the documented 0, 1, 2")
        if panicked(stderr):
            failures.append(f"{mode}: panicked:\n{stderr[-3000:]}")
        if code == 2 and "error" not in stderr:
            failures.append(f"{mode}: exit 2 without an error message:\n{stderr[-2000:]}")
        if peak_kb >= RSS_BUDGET_KB:
            failures.append(f"{mode}: peak RSS {peak_kb / 1024:.1f} MiB, over the budget of {RSS_BUDGET_KB // 1024} MiB")
        if asked.get("endless reply not refused by its end"):
            failures.append(f"{mode}: the orchestrator read a reply past {REPLY_BYTES_MAX >> 20} MiB")
        if acked_max >= RECEIVE_WINDOW_MAX + 1:
            failures.append(f"{mode}: the orchestrator acknowledged exactly-once id {acked_max}, past its receive "
                            f"window: it remembers what a node sends without bound")
    check(not failures, f"{len(failures)} runs went wrong:\n" + "\n".join(failures))


CASES = {f.__name__: f for f in [node_and_serve, hostile_node]}


def main():
    if len(sys.argv) != 3 or sys.argv[2] not in CASES:
        print(f"usage: {sys.argv[0]} PATH-TO-DTEST {{{','.join(CASES)}}}", file=sys.stderr)
        return 2
    procs = Procs(sys.argv[1])
    started = time.monotonic()
    try:
        CASES[sys.argv[2]](procs)
        print(f"{sys.argv[2]}: passed in {time.monotonic() - started:.1f} s")
        return 0
    except Exception:
        print(f"{sys.argv[2]}: FAILED after {time.monotonic() - started:.1f} s")
        traceback.print_exc(file=sys.stdout)
        procs.logs()
        return 1
    finally:
        procs.stop_all()
        shutil.rmtree(procs.dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
