#!/usr/bin/env python3
"""End-to-end tests of `dtest mcp`, driven by the official MCP Python SDK (`mcp` 2.3.0) the way an
assistant's client would: over stdio (the SDK starts the server) and over Streamable HTTP (with
the bearer token), plus `requests` for the raw HTTP refusals. Run by cli/tests/it/mcp.rs, one case
per process:

    python3 cli/tests/mcp_e2e.py PATH-TO-DTEST CASE

Each case starts its own server (and, with `--local N`, its nodes) in a fresh temporary directory
holding a copy of `scenarios/`, and kills every process it started before it returns. Exit status
0 means the case passed; otherwise the reason and the processes' logs are on stdout.

How the SDK cancels a call: cancelling the task (the anyio cancel scope) that awaits
`call_tool` makes its JSON-RPC dispatcher send `notifications/cancelled` {requestId, reason:
"caller cancelled"} before the cancellation propagates (shielded, `cancel_on_abandon`); there is
no `cancel()` method. The progress token it sends is the request's id.
"""

import functools
import glob
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import traceback
import uuid

import anyio
import httpx2
import requests
from mcp import Client, MCPError, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client

from e2e import TERMINAL, Failed, Target, check, kill_tagged, scenario, tagged_pids, wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOLS = {
    "validate_scenario", "run_simulation", "sweep_seeds", "compare_strategies",
    "get_execution_status", "cancel_execution", "get_report", "submit_test_execution",
    "register_node", "start_load_test", "stop_load_test", "get_metrics", "configure_profile",
    "get_node_health", "get_cluster_status", "configure_alerts", "allocate_resources",
    "deallocate_resources", "get_utilization", "send_message", "broadcast_message",
    "get_connection_status",
}
STRATEGIES = ["round_robin", "least_loaded", "random", "capability", "locality", "weighted", "adaptive"]
# A call's answer, or the server's handshake, that has not come by then is a failure, not a hang.
CALL_TIMEOUT_S = 120


def dump(value, limit=3000):
    text = json.dumps(value, indent=1, default=str)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


# ---- the SDK's transports, with the client's outgoing messages recorded ----------------------


class _TapWrite:
    """The client's write stream, noting each message (method, params, id) before it goes."""

    def __init__(self, inner, sent):
        self._inner = inner
        self._sent = sent

    async def send(self, item):
        message = item.message
        self._sent.append((getattr(message, "method", None), getattr(message, "params", None), getattr(message, "id", None)))
        await self._inner.send(item)

    async def aclose(self):
        await self._inner.aclose()

    async def __aenter__(self):
        await self._inner.__aenter__()
        return self

    async def __aexit__(self, *exc):
        return await self._inner.__aexit__(*exc)

    def __getattr__(self, name):
        return getattr(self._inner, name)


class Tap:
    """An SDK transport (stdio_client or streamable_http_client) whose sends are recorded in `sent`."""

    def __init__(self, inner):
        self._inner = inner
        self.sent = []

    async def __aenter__(self):
        read, write = await self._inner.__aenter__()
        return read, _TapWrite(write, self.sent)

    async def __aexit__(self, *exc):
        return await self._inner.__aexit__(*exc)


class Progress:
    """A progress callback for `call_tool` that keeps every (progress, total, message)."""

    def __init__(self):
        self.events = []
        self.first = anyio.Event()

    async def __call__(self, progress, total, message):
        self.events.append((progress, total, message))
        self.first.set()


def texts(result):
    return [c.text for c in result.content if getattr(c, "type", None) == "text"]


def describe(result):
    return dump({"isError": result.is_error, "structuredContent": result.structured_content,
                 "content": [c.model_dump(by_alias=True, exclude_none=True) for c in result.content]})


class Session:
    """A connected SDK client and the checks every case makes on a tool's answer."""

    def __init__(self, client, tap, transport):
        self.client = client
        self.tap = tap
        self.transport = transport

    async def call(self, name, arguments, progress=None, timeout_s=CALL_TIMEOUT_S):
        try:
            with anyio.fail_after(timeout_s):
                return await self.client.call_tool(name, arguments, progress_callback=progress)
        except TimeoutError:
            raise Failed(f"{self.transport}: {name} {dump(arguments, 500)} got no answer within {timeout_s} s") from None
        except MCPError as e:
            raise Failed(f"{self.transport}: {name} {dump(arguments, 500)} answered a JSON-RPC error "
                         f"{e.code} {e.message!r} (data {e.error.data!r}); expected a tool result") from None

    async def ok(self, name, arguments, progress=None, timeout_s=CALL_TIMEOUT_S):
        """Calls a tool that must succeed; returns its structured content, checking the text copy."""
        result = await self.call(name, arguments, progress, timeout_s)
        check(not result.is_error, f"{self.transport}: {name} {dump(arguments, 500)} failed:\n{describe(result)}")
        structured = result.structured_content
        check(isinstance(structured, dict), f"{name}: structuredContent is an object:\n{describe(result)}")
        copies = []
        for text in texts(result):
            try:
                copies.append(json.loads(text))
            except ValueError:
                pass
        check(structured in copies, f"{name}: a text content item holds a copy of structuredContent:\n{describe(result)}")
        return structured

    async def tool_error(self, name, arguments, *fields):
        """Calls a tool that must refuse; the text must name one of `fields`."""
        result = await self.call(name, arguments)
        check(result.is_error, f"{self.transport}: {name} {dump(arguments, 800)} should be a tool error (isError: true) "
                               f"naming {' or '.join(fields)}; it answered:\n{describe(result)}")
        text = "\n".join(texts(result))
        check(any(f in text for f in fields), f"{name} {dump(arguments, 800)}: the error text should name "
                                              f"{' or '.join(fields)}; it says {text!r}")
        return text

    async def wait_ended(self, id, timeout_s=120, progress=None):
        """Polls get_execution_status (waiting server side, 10 s at a time) until `id` ends."""
        deadline = time.monotonic() + timeout_s
        while True:
            view = await self.ok("get_execution_status", {"id": id, "wait_s": 10}, progress=progress)
            check(view.get("id") == id, f"get_execution_status {id} answered another id: {dump(view)}")
            if view.get("state") in TERMINAL:
                return view
            check(view.get("state") in {"pending", "running"}, f"get_execution_status {id}: unknown state: {dump(view)}")
            check(time.monotonic() < deadline, f"{id} did not end within {timeout_s} s; last status {dump(view)}")

    async def read_json_resource(self, uri):
        try:
            with anyio.fail_after(CALL_TIMEOUT_S):
                result = await self.client.read_resource(uri)
        except MCPError as e:
            raise Failed(f"{self.transport}: reading {uri}: JSON-RPC error {e.code} {e.message!r}") from None
        except TimeoutError:
            raise Failed(f"{self.transport}: reading {uri} got no answer within {CALL_TIMEOUT_S} s") from None
        check(len(result.contents) >= 1 and getattr(result.contents[0], "text", None) is not None,
              f"{uri}: one text content: {dump(result.model_dump(by_alias=True))}")
        content = result.contents[0]
        check(content.mime_type == "application/json", f"{uri}: mimeType {content.mime_type!r}, expected application/json")
        try:
            return json.loads(content.text)
        except ValueError as e:
            raise Failed(f"{uri} is not JSON ({e}): {content.text[:500]!r}") from None


# ---- the harness: processes, files, teardown ------------------------------------------------


class Harness:
    """A temporary directory with a copy of `scenarios/`, the servers a case starts there, and the
    tag in every one's environment by which teardown finds them and what they started."""

    def __init__(self, dtest):
        self.dtest = os.path.abspath(dtest)
        self.dir = tempfile.mkdtemp(prefix="dtest-mcp-e2e-")
        self.tag = uuid.uuid4().hex
        self.token = "mcp-" + uuid.uuid4().hex
        self.token_file = self.path("token")
        with open(self.token_file, "w") as f:
            f.write(self.token + "\n")
        shutil.copytree(os.path.join(ROOT, "scenarios"), self.path("scenarios"))
        self.procs = []  # (name, Popen) of the HTTP servers
        self.logs = []  # files to show on failure
        self.starts = 0
        self.url = None

    def path(self, *parts):
        return os.path.join(self.dir, *parts)

    def env(self):
        return dict(os.environ, DTEST_E2E_TAG=self.tag)

    def spawn(self, name, argv):
        """Starts a tagged process (a `dtest serve` or `dtest node`); returns its first stdout line."""
        self.starts += 1
        prefix = self.path(f"{name}.{self.starts}")
        with open(prefix + ".out", "w") as out, open(prefix + ".err", "w") as err:
            proc = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=self.env(), cwd=self.dir)
        self.procs.append((name, proc))
        self.logs += [prefix + ".out", prefix + ".err"]

        def first_line():
            if proc.poll() is not None:
                raise Failed(f"{name} exited with {proc.returncode} before saying where it listens")
            with open(prefix + ".out") as f:
                text = f.read()
            return text.split("\n", 1)[0] if "\n" in text else None

        return wait_for(f"{name}'s first stdout line", first_line, 30)

    def start_http(self, extra=()):
        """Starts `dtest mcp --http` on a free loopback port; returns its /mcp URL."""
        self.starts += 1
        prefix = self.path(f"mcp-http.{self.starts}")
        argv = [self.dtest, "mcp", "--http", "127.0.0.1:0", "--token-file", self.token_file, *extra]
        with open(prefix + ".out", "w") as out, open(prefix + ".err", "w") as err:
            proc = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=self.env(), cwd=self.dir)
        self.procs.append(("mcp-http", proc))
        self.logs += [prefix + ".out", prefix + ".err"]

        def first_line():
            if proc.poll() is not None:
                raise Failed(f"dtest mcp --http exited with {proc.returncode} before saying where it listens")
            with open(prefix + ".out") as f:
                text = f.read()
            return text.split("\n", 1)[0] if "\n" in text else None

        line = wait_for("dtest mcp --http's first stdout line", first_line, 30)
        expected = "dtest mcp listening on "
        check(line.startswith(expected) and line.rstrip().endswith("/mcp"),
              f"the first stdout line should be '{expected}http://127.0.0.1:PORT/mcp'; it is {line!r}")
        self.url = line[len(expected):].strip()
        return self.url

    def session(self, transport, extra=(), mode="auto"):
        """`async with h.session("stdio" | "http", extra) as s`: a server with `extra` flags and a
        connected SDK client. Over HTTP the server is started here and outlives the session.
        `mode` is the SDK's: "auto" (its default) probes `server/discover` and speaks 2026-07-28
        when the server does, else falls back to the `initialize` handshake, which "legacy" forces."""
        harness = self

        class Connect:
            async def __aenter__(self):
                self.stack = []
                if transport == "stdio":
                    harness.starts += 1
                    errlog = harness.path(f"mcp-stdio.{harness.starts}.err")
                    harness.logs.append(errlog)
                    self.errfile = open(errlog, "w")
                    params = StdioServerParameters(command=harness.dtest, args=["mcp", *extra],
                                                   env={"DTEST_E2E_TAG": harness.tag}, cwd=harness.dir)
                    tap = Tap(stdio_client(params, errlog=self.errfile))
                    self.http = None
                else:
                    self.errfile = None
                    url = harness.start_http(extra)
                    self.http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {harness.token}"},
                                                   timeout=httpx2.Timeout(30.0, read=300.0))
                    await self.http.__aenter__()
                    tap = Tap(streamable_http_client(url, http_client=self.http))
                # No cancel scope may wrap the client's entry (its task groups outlive it): the SDK's
                # read timeout bounds every request, the handshake's included.
                self.client = Client(tap, read_timeout_seconds=CALL_TIMEOUT_S, mode=mode)
                try:
                    await self.client.__aenter__()
                except MCPError as e:
                    raise Failed(f"{transport}: the MCP handshake failed: {e.code} {e.message!r}; the client sent "
                                 f"{[m for m, _, _ in tap.sent]}") from None
                return Session(self.client, tap, transport)

            async def __aexit__(self, *exc):
                # The SDK's own shutdown is bounded: stdin closed, 2 s, SIGTERM, 2 s, SIGKILL.
                try:
                    await self.client.__aexit__(*exc)
                finally:
                    if self.http is not None:
                        await self.http.__aexit__(None, None, None)
                    if self.errfile is not None:
                        self.errfile.close()
                return False

        return Connect()

    def tagged_pids(self):
        return tagged_pids(self.tag)

    def server_pids(self):
        """The tagged `dtest mcp` processes (not their nodes)."""
        found = []
        for pid in self.tagged_pids():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    argv = f.read().split(b"\0")
            except OSError:
                continue
            if b"mcp" in argv and b"node" not in argv[:2]:
                found.append(pid)
        return found

    def kill_all(self):
        # SIGTERM first, as a user's Ctrl-C or a service manager would: the servers stop their
        # nodes and remove their temporary directories; SIGKILL what is left.
        for _, proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for _, proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        # What the servers started (their nodes, the nodes' commands), and a stdio server the SDK
        # could not stop.
        kill_tagged(self.tag)

    def print_logs(self):
        for file in self.logs:
            try:
                with open(file, errors="replace") as f:
                    text = f.read()
            except OSError:
                continue
            if text.strip():
                print(f"---- {os.path.basename(file)} (last 3000 characters) ----")
                print(text[-3000:])


def cpu_seconds(pid):
    """utime + stime of `pid`, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def node_ids(view):
    """The node ids in a view: a list of node objects under some key (or the view's `nodes`)."""
    for value in view.values():
        if isinstance(value, list) and value and all(isinstance(n, dict) and "id" in n for n in value):
            return sorted(n["id"] for n in value)
    if "id" in view and isinstance(view["id"], str):
        return [view["id"]]
    return None


def node_count(cluster):
    """How many nodes get_cluster_status counts: `nodes` by state, or a list of nodes."""
    nodes = cluster.get("nodes")
    if isinstance(nodes, dict):
        return sum(v for v in nodes.values() if isinstance(v, int))
    if isinstance(nodes, list):
        return len(nodes)
    return None


def check_progress_rises(events, what, total, last_at_most):
    check(events, f"{what}: at least one progress notification; none came")
    values = [p for p, _, _ in events]
    check(all(a <= b for a, b in zip(values, values[1:])), f"{what}: progress values never decrease: {values}")
    check(values[-1] <= last_at_most, f"{what}: the last progress is at most {last_at_most}: {values}")
    totals = {t for _, t, _ in events}
    check(totals == {total}, f"{what}: every notification's total is {total}: {sorted(totals, key=str)}")


def sim_cli(dtest, *args):
    run = subprocess.run([dtest, "sim", *args], capture_output=True, text=True,
                         timeout=600, cwd=ROOT)
    check(run.returncode in (0, 1), f"dtest sim {' '.join(args)} exited {run.returncode}: {run.stderr[-2000:]}")
    return json.loads(run.stdout)


# ---- cases ----------------------------------------------------------------------------------


async def stdio_tools_and_schemas(h):
    async with h.session("stdio") as s:
        tools, cursor = [], None
        for _ in range(20):
            page = await s.client.list_tools(cursor=cursor)
            tools += page.tools
            cursor = page.next_cursor
            if cursor is None:
                break
        names = sorted(t.name for t in tools)
        check(set(names) == TOOLS and len(names) == len(TOOLS),
              f"tools/list names exactly the {len(TOOLS)} tools:\nmissing {sorted(TOOLS - set(names))}\n"
              f"extra {sorted(set(names) - TOOLS)}\nlisted {names}")
        problems = []
        for tool in tools:
            schema = tool.input_schema or {}
            # The MCP schema makes `properties` optional, but some clients want it even when empty.
            properties = schema.get("properties")
            if schema.get("type") != "object" or not isinstance(properties, dict):
                problems.append(f"{tool.name}: inputSchema is an object schema with `properties`: {dump(schema, 400)}")
            else:
                for field, spec in properties.items():
                    if not (isinstance(spec, dict) and spec.get("description")):
                        problems.append(f"{tool.name}: inputSchema property `{field}` has no description: {dump(spec, 300)}")
            if not (isinstance(tool.output_schema, dict) and tool.output_schema.get("type") == "object"):
                problems.append(f"{tool.name}: outputSchema has type object: {dump(tool.output_schema, 400)}")
            notes = tool.annotations
            if notes is None or not isinstance(notes.read_only_hint, bool):
                problems.append(f"{tool.name}: annotations with readOnlyHint: {notes!r}")
            if not tool.description:
                problems.append(f"{tool.name}: has no description")
        for name in ["validate_scenario", "get_execution_status", "get_report", "get_metrics", "get_node_health",
                     "get_cluster_status", "get_utilization", "get_connection_status"]:
            tool = next(t for t in tools if t.name == name)
            if tool.annotations is not None and tool.annotations.read_only_hint is not True:
                problems.append(f"{name} only reads: its readOnlyHint should be true, not {tool.annotations.read_only_hint}")
        for name in ["submit_test_execution", "cancel_execution", "start_load_test", "stop_load_test",
                     "allocate_resources", "deallocate_resources", "send_message", "broadcast_message"]:
            tool = next(t for t in tools if t.name == name)
            if tool.annotations is not None and tool.annotations.read_only_hint is not False:
                problems.append(f"{name} changes things: its readOnlyHint should be false, not {tool.annotations.read_only_hint}")
        for name in ["validate_scenario", "run_simulation", "sweep_seeds", "compare_strategies", "submit_test_execution"]:
            props = (next(t for t in tools if t.name == name).input_schema or {}).get("properties") or {}
            if not {"scenario", "path"} <= set(props):
                problems.append(f"{name}: takes `scenario` or `path`; its properties are {sorted(props)}")
        check(not problems, "tool listing problems:\n" + "\n".join(problems))

        resources = await s.client.list_resources()
        uris = sorted(r.uri for r in resources.resources)
        for uri in ["dtest://schema/scenario", "dtest://scenarios/partition"]:
            check(uri in uris, f"resources/list holds {uri}: {uris}")
        shipped = sorted(f[:-5] for f in os.listdir(os.path.join(ROOT, "scenarios")) if f.endswith(".json"))
        listed = sorted(u[len("dtest://scenarios/"):] for u in uris if u.startswith("dtest://scenarios/"))
        check(listed == shipped, f"a dtest://scenarios/NAME for each shipped scenario: listed {listed}, shipped {shipped}")
        templates = await s.client.list_resource_templates()
        patterns = [t.uri_template for t in templates.resource_templates]
        check("dtest://executions/{id}/report" in patterns,
              f"resources/templates/list holds dtest://executions/{{id}}/report: {patterns}")

        schema = await s.read_json_resource("dtest://schema/scenario")
        printed = json.loads(subprocess.run([h.dtest, "schema"], capture_output=True, text=True, timeout=60, check=True).stdout)
        check(schema == printed, f"dtest://schema/scenario is what `dtest schema` prints; it begins {dump(schema, 600)}")
        partition = await s.read_json_resource("dtest://scenarios/partition")
        with open(os.path.join(ROOT, "scenarios/partition.json")) as f:
            check(partition == json.load(f),
                  f"dtest://scenarios/partition is scenarios/partition.json; it begins {dump(partition, 600)}")

        prompts = await s.client.list_prompts()
        prompt = next((p for p in prompts.prompts if p.name == "write_scenario"), None)
        check(prompt is not None, f"prompts/list holds write_scenario: {[p.name for p in prompts.prompts]}")
        check(any(a.name == "goal" for a in prompt.arguments or []), f"write_scenario takes `goal`: {prompt.arguments}")
        goal = "three nodes lose each other for 20 seconds while 30 shards run"
        answer = await s.client.get_prompt("write_scenario", {"goal": goal})
        said = json.dumps([m.model_dump(by_alias=True) for m in answer.messages])
        check(answer.messages and goal in said, f"write_scenario's messages carry the goal: {said[:1500]}")
        print(f"auto mode: protocol {s.client.protocol_version}")

    # A client of the handshake era (`initialize`, as most assistants' are today) gets the same.
    async with h.session("stdio", mode="legacy") as s:
        listed = await s.client.list_tools()
        check({t.name for t in listed.tools} == TOOLS, f"legacy mode: tools/list: {[t.name for t in listed.tools]}")
        view = await s.ok("validate_scenario", {"path": "scenarios/partition.json"})
        check(view.get("valid") is True, f"legacy mode: validate_scenario: {dump(view)}")
        print(f"legacy mode: protocol {s.client.protocol_version}")


async def bad_scenario_is_a_tool_error(h, transport):
    good = scenario("bad", 3, ["true"])
    async with h.session(transport) as s:
        for count in [-1, "three"]:
            bad = json.loads(json.dumps(good))
            bad["cluster"]["groups"][0]["count"] = count
            await s.tool_error("validate_scenario", {"scenario": bad}, "count")
        await s.tool_error("validate_scenario", {}, "scenario")
        await s.tool_error("validate_scenario", {"path": "scenarios/no-such-file.json"}, "no-such-file", "path")
        await s.tool_error("run_simulation", {"path": "scenarios/partition.json", "seed": "x"}, "seed")
        await s.tool_error("run_simulation", {"path": "scenarios/partition.json", "wait_s": 51}, "wait_s")
        await s.tool_error("get_execution_status", {"id": "sim-999999"}, "sim-999999", "id")
        if transport == "http":
            # Over HTTP only files under the server's directory are read, and a path outside it
            # is answered as a missing one.
            await s.tool_error("validate_scenario", {"path": "/etc/passwd"}, "path: /etc/passwd: no such file under")
        # The session still works, and a good scenario is valid, by file and inline.
        with open(h.path("scenarios/partition.json")) as f:
            partition = json.load(f)
        for arguments in [{"path": "scenarios/partition.json"}, {"scenario": partition}]:
            view = await s.ok("validate_scenario", arguments)
            expected = {"valid": True, "name": "partition", "nodes": 120, "tasks": 410, "faults": 4, "duration_s": 600}
            got = {k: view.get(k) for k in expected}
            check(got == expected, f"validate_scenario {list(arguments)}: expected {expected}, got {dump(view)}")


async def simulation_and_sweep_with_progress(h, transport):
    async with h.session(transport) as s:
        progress = Progress()
        answer = await s.ok("run_simulation", {"path": "scenarios/partition.json", "seed": 42}, progress=progress)
        id = answer.get("id")
        check(isinstance(id, str) and id.startswith("sim-"), f"run_simulation's id is sim-N: {dump(answer)}")
        check(answer.get("state") == "succeeded" and answer.get("passed") is True,
              f"run_simulation of partition.json seed 42 within wait_s: state succeeded, passed: {dump(answer)}")
        report = answer.get("report")
        check(isinstance(report, dict) and report.get("seed") == 42, f"the report's seed is 42: {dump(answer)}")
        expected = sim_cli(h.dtest, "scenarios/partition.json", "--seed", "42", "--json")
        if report != expected:
            keys = sorted(k for k in set(report) | set(expected) if report.get(k) != expected.get(k))
            raise Failed("run_simulation's report is what `dtest sim scenarios/partition.json --seed 42 --json` prints; "
                         f"they differ in {keys}:\n"
                         + "\n".join(f"{k}: tool {dump(report.get(k), 300)} cli {dump(expected.get(k), 300)}" for k in keys))
        print(f"run_simulation {id}: {len(progress.events)} progress notifications, the last {progress.events[-1:]}")
        check_progress_rises(progress.events, "run_simulation", 600_000, 600_000)
        for _, _, message in progress.events:
            check(message and message.split(":", 1)[0] == id,
                  f"run_simulation's progress messages begin with '{id}:': {message!r}")

        status = await s.ok("get_execution_status", {"id": id})
        check(status.get("id") == id and status.get("state") == "succeeded", f"get_execution_status {id}: {dump(status)}")
        again = await s.ok("get_report", {"id": id})
        check(again.get("format") == "json" and again.get("report") == report,
              f"get_report {id} gives the same report: {dump(again)}")

        if transport == "stdio":
            table = await s.ok("compare_strategies", {"path": "scenarios/partition.json", "seed": 42,
                                                      "strategies": ["round_robin", "least_loaded"]})
            rows = table.get("rows") or []
            check(table.get("seed") == 42 and [r.get("strategy") for r in rows] == ["round_robin", "least_loaded"],
                  f"compare_strategies: a row per asked strategy, in order, seed 42: {dump(table)}")
            every = await s.ok("compare_strategies", {"path": "scenarios/partition.json"})
            check([r.get("strategy") for r in every.get("rows") or []] == STRATEGIES,
                  f"compare_strategies without `strategies`: a row for each of {STRATEGIES}: {dump(every)}")
            check(every["rows"][:2] == rows,
                  f"the same seed (42 by default) gives the same rows:\n{dump(every['rows'][:2])}\n{dump(rows)}")
            least = rows[1]
            check(least.get("passed") is True and least.get("makespan_s") == report.get("makespan_s"),
                  f"compare_strategies' least_loaded row (the scenario's own strategy) passed with run_simulation's "
                  f"makespan {report.get('makespan_s')}: {dump(least)}")

        sweep_progress = Progress()
        answer = await s.ok("sweep_seeds", {"path": "scenarios/partition.json", "seeds": "0..50", "wait_s": 50},
                            progress=sweep_progress)
        id = answer.get("id")
        check(isinstance(id, str) and answer.get("state") in TERMINAL | {"running"}, f"sweep_seeds: {dump(answer)}")
        if answer["state"] == "running":
            # Past wait_s on a slow machine: the rest of its progress comes with the status, and
            # its whole answer with its report.
            await s.wait_ended(id, timeout_s=300, progress=sweep_progress)
            answer = (await s.ok("get_report", {"id": id})).get("report") or {}
        else:
            report = (await s.ok("get_report", {"id": id})).get("report")
            check(report == answer, f"get_report {id} gives the sweep's answer:\n{dump(report)}\nanswer {dump(answer)}")
        check(answer.get("state") == "succeeded", f"the sweep of partition.json over 0..50 ends succeeded: {dump(answer)}")
        check(answer.get("seeds") == 50 and answer.get("passed", 0) + answer.get("failed", 0) == 50,
              f"the sweep covers 50 seeds, passed + failed == 50: {dump(answer)}")
        check(isinstance(answer.get("failing"), list) and len(answer["failing"]) == answer["failed"],
              f"a `failing` entry per failed seed: {dump(answer)}")
        print(f"sweep_seeds {id}: progress {[p for p, _, _ in sweep_progress.events]}")
        check_progress_rises(sweep_progress.events, "sweep_seeds", 50, 50)

        # A call that returns at once leaves the progress to get_execution_status's waits.
        answer = await s.ok("sweep_seeds", {"path": "scenarios/partition.json", "seeds": "100..110", "wait_s": 0})
        check(answer.get("state") == "running", f"sweep_seeds with wait_s 0 answers at once, running: {dump(answer)}")
        status_progress = Progress()
        view = await s.wait_ended(answer["id"], timeout_s=300, progress=status_progress)
        check(view["state"] == "succeeded", f"the sweep over 100..110 ends succeeded: {dump(view)}")
        print(f"get_execution_status {answer['id']}: progress {[p for p, _, _ in status_progress.events]}")
        check_progress_rises(status_progress.events, f"get_execution_status {answer['id']} with wait_s 10", 10, 10)


async def execution_on_local_nodes(h, transport):
    async with h.session(transport, ["--local", "3", "--allow-commands"]) as s:
        await execution_on_three_nodes(s)
        servers = h.server_pids()
    if transport == "stdio":
        # The client closed stdin: the server stops its nodes and removes its temporary
        # directory (the embedded service's data, the token file), leaving nothing behind.
        check(len(servers) == 1, f"one tagged `dtest mcp` process: {servers}")
        pattern = os.path.join(tempfile.gettempdir(), f"dtest-mcp-{servers[0]}-*")
        wait_for("the server, its nodes and its temporary directory to be gone",
                 lambda: not h.tagged_pids() and not glob.glob(pattern), 15)


async def stdio_drives_a_running_serve(h):
    """`--orchestrator URL`: the same execution on a real `dtest serve` with three nodes of its own."""
    await drive_a_running_serve(h, daemon_tls=[], client_tls=[])


async def stdio_drives_a_serve_over_mutual_tls(h):
    """`--orchestrator https://...` with `--cacert` and a client certificate: the same execution
    on a service and nodes that all demand certificates of `dtest certs`' CA."""
    certs = h.path("certs")
    subprocess.run([h.dtest, "certs", certs], check=True, capture_output=True, timeout=30)
    daemon_tls = ["--tls-cert", f"{certs}/server.pem", "--tls-key", f"{certs}/server-key.pem",
                  "--tls-client-ca", f"{certs}/ca.pem", "--cacert", f"{certs}/ca.pem"]
    client_tls = ["--cacert", f"{certs}/ca.pem", "--client-cert", f"{certs}/client.pem",
                  "--client-key", f"{certs}/client-key.pem"]
    url = await drive_a_running_serve(h, daemon_tls, client_tls)
    check(url.startswith("https://"), f"the service listens on {url}")


async def drive_a_running_serve(h, daemon_tls, client_tls):
    line = h.spawn("serve", [h.dtest, "serve", "--listen", "127.0.0.1:0", "--token-file", h.token_file,
                             "--data", h.path("serve-data"), *daemon_tls])
    prefix = "dtest serve listening on "
    check(line.startswith(prefix), f"serve's first line: {line!r}")
    url = line[len(prefix):].strip()
    for i in range(1, 4):
        workdir = h.path(f"work-local-{i}")
        os.makedirs(workdir, exist_ok=True)
        h.spawn(f"local-{i}", [h.dtest, "node", "--listen", "127.0.0.1:0", "--token-file", h.token_file,
                               "--allow-commands", "--group", "local", "--name", f"local-{i}", "--workdir", workdir,
                               "--orchestrator", url, "--orchestrator-token-file", h.token_file, *daemon_tls])
    async with h.session("stdio", ["--orchestrator", url, "--orchestrator-token-file", h.token_file,
                                   *client_tls]) as s:
        await execution_on_three_nodes(s)
    return url


async def execution_on_three_nodes(s):
    async def three_nodes():
        deadline = time.monotonic() + 60
        while True:
            cluster = await s.ok("get_cluster_status", {})
            if node_count(cluster) == 3:
                return cluster
            check(time.monotonic() < deadline, f"get_cluster_status counts 3 nodes within 60 s: {dump(cluster)}")
            await anyio.sleep(0.5)
    await three_nodes()
    health = await s.ok("get_node_health", {})
    check(node_ids(health) == ["local-1", "local-2", "local-3"], f"get_node_health lists local-1..local-3: {dump(health)}")

    # Task i sleeps i seconds: they end one a second, for the progress to show.
    answer = await s.ok("submit_test_execution", {"scenario": scenario("mcp", 6, ["sh", "-c", "sleep {index}"])})
    id = answer.get("id")
    uri = f"dtest://executions/{id}/report"
    check(isinstance(id, str) and answer.get("state") in {"pending", "running", "succeeded"}
          and answer.get("report_uri") == uri,
          f"submit_test_execution answers {{id, state, report_uri: {uri}}}: {dump(answer)}")
    progress = Progress()
    view = await s.wait_ended(id, timeout_s=120, progress=progress)
    check(view["state"] == "succeeded", f"execution {id} ends succeeded: {dump(view)}")
    print(f"get_execution_status {id}: progress {progress.events}")
    # An execution's progress is its run's clock in seconds (tasks ended may stand still for a
    # whole load), with no total; the message counts the tasks.
    check_progress_rises(progress.events, f"get_execution_status {id} with wait_s 10", None, 120)
    ended = [int(m) for _, _, text in progress.events for m in re.findall(r"(\d+) of 6 tasks ended", text or "")]
    check(ended and max(ended) >= 1,
          f"get_execution_status {id}'s progress messages count the tasks that ended (one a second over 6 s): "
          f"{progress.events}")

    report = await s.read_json_resource(uri)
    tasks = report.get("tasks") or {}
    check(tasks.get("submitted") == 6 and tasks.get("completed") == 6,
          f"{uri}: 6 tasks submitted and completed: {dump(tasks)}")
    result = await s.call("get_report", {"id": id})
    check(not result.is_error, f"get_report {id}: {describe(result)}")
    links = [c.uri for c in result.content if getattr(c, "type", None) == "resource_link"]
    check(uri in [str(u) for u in links], f"get_report's content holds a resource link to {uri}: {describe(result)}")
    got = result.structured_content or {}
    check(got.get("id") == id and got.get("format") == "json" and got.get("report") == report,
          f"get_report {id}'s report is the resource's: {dump(got)}")
    html = await s.ok("get_report", {"id": id, "format": "html"})
    check(isinstance(html.get("report"), str) and "<html" in html["report"].lower(), f"the HTML report: {dump(html, 600)}")
    junit = await s.ok("get_report", {"id": id, "format": "junit"})
    check(isinstance(junit.get("report"), str) and junit["report"].count("<testcase") == 6,
          f"the JUnit report holds 6 test cases: {dump(junit, 1500)}")

    # Cancelled, an execution stops on its nodes and keeps what it measured.
    answer = await s.ok("submit_test_execution", {"scenario": scenario("long", 3, ["sh", "-c", "sleep 120"])})
    long = answer["id"]
    deadline = time.monotonic() + 60
    while (await s.ok("get_execution_status", {"id": long})).get("state") == "pending":
        check(time.monotonic() < deadline, f"{long} starts within 60 s")
        await anyio.sleep(0.2)
    cancelled = await s.ok("cancel_execution", {"id": long})
    check(cancelled.get("id") == long, f"cancel_execution answers with the execution: {dump(cancelled)}")
    view = await s.wait_ended(long, timeout_s=60)
    check(view["state"] == "cancelled", f"a cancelled execution ends cancelled: {dump(view)}")
    report = await s.read_json_resource(f"dtest://executions/{long}/report")
    check((report.get("tasks") or {}).get("cancelled") == 3, f"its report counts 3 tasks cancelled: {dump(report.get('tasks'))}")
    print(f"{long}: cancelled; its report's tasks {report.get('tasks')}")

    cluster = await three_nodes()
    nodes = cluster.get("nodes")
    check(not isinstance(nodes, dict) or nodes.get("healthy") == 3,
          f"get_cluster_status: the 3 nodes are healthy: {dump(cluster)}")


async def cancel_stops_a_simulation(h, transport, mode="auto"):
    # scale-1000, run three times as long (1,800 simulated seconds): about a minute of CPU in a
    # debug build, so the cancel lands long before it could end by itself.
    with open(h.path("scenarios/scale-1000.json")) as f:
        long = json.load(f)
    long["name"], long["duration_s"] = "long", 1800
    for task in long["workload"]["tasks"]:
        if task["kind"] == "load":
            task["load"]["pattern"]["duration_s"] = 1700
    async with h.session(transport, mode=mode) as s:
        pids = h.server_pids()
        check(len(pids) == 1, f"one tagged `dtest mcp` process: {pids}")
        pid = pids[0]
        progress = Progress()
        finished = {}

        async def run():
            finished["result"] = await s.client.call_tool("run_simulation", {"scenario": long, "seed": 42, "wait_s": 50},
                                                         progress_callback=progress)

        async with anyio.create_task_group() as group:
            group.start_soon(run)
            with anyio.move_on_after(60):
                await progress.first.wait()
            if "result" in finished:
                raise Failed(f"the simulation ended before it could be cancelled: {describe(finished['result'])}")
            check(progress.events, "run_simulation sent a progress notification within 60 s")
            before = cpu_seconds(pid)
            await anyio.sleep(1)
            busy = cpu_seconds(pid) - before
            # The SDK's cancellation: cancel the scope awaiting call_tool.
            group.cancel_scope.cancel()
        if "result" in finished:
            raise Failed(f"the cancelled call_tool returned: {describe(finished['result'])}")
        message = progress.events[0][2] or ""
        id = message.split(":", 1)[0]
        check(id.startswith("sim-"), f"the first progress message names the simulation: {message!r}")
        if transport == "stdio":
            request_ids = [i for m, _, i in s.tap.sent if m == "tools/call"]
            cancels = [p for m, p, _ in s.tap.sent if m == "notifications/cancelled"]
            check(cancels and cancels[-1].get("requestId") == request_ids[-1],
                  f"the SDK sent notifications/cancelled for request {request_ids[-1]}: {cancels}")
        # Over HTTP the SDK cancels by closing the call's response stream.

        deadline = time.monotonic() + 10
        while True:
            view = await s.ok("get_execution_status", {"id": id})
            if view.get("state") == "cancelled":
                break
            check(time.monotonic() < deadline, f"{id} is cancelled within 10 s of notifications/cancelled; it is {dump(view)}")
            await anyio.sleep(0.2)
        before = cpu_seconds(pid)
        await anyio.sleep(2)
        spent = cpu_seconds(pid) - before
        print(f"{id}: {busy:.2f} s of CPU in 1 s while it ran, {spent:.2f} s in 2 s once cancelled")
        check(spent < 0.5, f"the server stops simulating: {spent:.2f} s of CPU in the 2 s after {id} was cancelled "
                           f"(it used {busy:.2f} s in 1 s while running)")
        # The session still answers after the cancel.
        view = await s.ok("validate_scenario", {"path": "scenarios/partition.json"})
        check(view.get("valid") is True, f"validate_scenario after the cancel: {dump(view)}")


async def http_refuses_without_token_and_foreign_origin(h):
    url = h.start_http()
    body = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "mcp-e2e", "version": "0"}}}
    base = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    bearer = {"Authorization": f"Bearer {h.token}"}
    port = url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)[1]

    def post(headers):
        return requests.post(url, json=body, headers={**base, **headers}, timeout=30)

    for what, headers, status in [
        ("no token", {}, 401),
        ("a wrong token", {"Authorization": f"Bearer wrong-{h.token}"}, 401),
        ("the token and Origin: http://evil.example", {**bearer, "Origin": "http://evil.example"}, 403),
        ("the token and Host: evil.example", {**bearer, "Host": "evil.example"}, 403),
        (f"the token and Host: evil.example:{port}", {**bearer, "Host": f"evil.example:{port}"}, 403),
    ]:
        answer = post(headers)
        check(answer.status_code == status,
              f"POST initialize with {what}: expected {status}, got {answer.status_code} {answer.text[:500]!r}")
    answer = post(bearer)
    check(answer.status_code == 200,
          f"POST initialize with the token and no Origin: expected 200, got {answer.status_code} {answer.text[:500]!r}")
    kind = answer.headers.get("Content-Type", "")
    if kind.startswith("text/event-stream"):
        data = [line[5:].strip() for line in answer.text.splitlines() if line.startswith("data:") and line[5:].strip()]
        check(data, f"the SSE answer to initialize holds a data line: {answer.text[:500]!r}")
        message = json.loads(data[0])
    else:
        check(kind.startswith("application/json"), f"initialize answered with Content-Type {kind!r}")
        message = answer.json()
    check(message.get("id") == 1 and "protocolVersion" in (message.get("result") or {}),
          f"initialize is answered with a result holding protocolVersion: {dump(message)}")
    answer = post({**bearer, "Origin": f"http://127.0.0.1:{port}"})
    check(answer.status_code == 200, f"POST initialize with the token and the server's own Origin: expected 200, got {answer.status_code}")

    http = httpx2.AsyncClient(headers=bearer, timeout=httpx2.Timeout(30.0, read=300.0))
    async with http:
        async with Client(streamable_http_client(url, http_client=http)) as client:
            with anyio.fail_after(CALL_TIMEOUT_S):
                listed = await client.list_tools()
            check({t.name for t in listed.tools} == TOOLS, f"tools/list over HTTP with the token: {[t.name for t in listed.tools]}")


async def http_over_mutual_tls_refuses_strangers(h):
    """`mcp --http` with `--tls-cert`, `--tls-key` and `--tls-client-ca`: the SDK client with the
    cluster's client certificate lists the tools; a client without a certificate, or with one
    another CA signed, is refused in the TLS handshake, token or not."""
    certs, other = h.path("certs"), h.path("other")
    for d in (certs, other):
        subprocess.run([h.dtest, "certs", d], check=True, capture_output=True, timeout=30)
    url = h.start_http(["--tls-cert", f"{certs}/server.pem", "--tls-key", f"{certs}/server-key.pem",
                        "--tls-client-ca", f"{certs}/ca.pem"])
    check(url.startswith("https://127.0.0.1:"), f"dtest mcp --http over TLS says {url}")
    bearer = {"Authorization": f"Bearer {h.token}"}

    def tls(cert_dir=None):
        context = ssl.create_default_context(cafile=f"{certs}/ca.pem")
        if cert_dir:
            context.load_cert_chain(f"{cert_dir}/client.pem", f"{cert_dir}/client-key.pem")
        return context

    http = httpx2.AsyncClient(headers=bearer, verify=tls(certs), timeout=httpx2.Timeout(30.0, read=300.0))
    async with http:
        async with Client(streamable_http_client(url, http_client=http)) as client:
            with anyio.fail_after(CALL_TIMEOUT_S):
                listed = await client.list_tools()
            check({t.name for t in listed.tools} == TOOLS, f"tools/list over mutual TLS: {[t.name for t in listed.tools]}")
    body = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "mcp-e2e", "version": "0"}}}
    for who, context, alert in [("no certificate", tls(), "CERTIFICATE_REQUIRED"),
                                ("another CA's certificate", tls(other), "UNKNOWN_CA")]:
        async with httpx2.AsyncClient(headers=bearer, verify=context, timeout=30.0) as stranger:
            try:
                answer = await stranger.post(url, json=body, headers={"Accept": "application/json, text/event-stream"})
            except (httpx2.TransportError, ssl.SSLError) as e:
                check(alert in str(e), f"a client with {who} was refused, but not with {alert}: {e!r}")
                continue
            raise Failed(f"a client with {who} was answered {answer.status_code}, expected a refused handshake")


async def guardrails_refuse_foreign_targets_and_budgets(h):
    target = Target()
    async with h.session("stdio", ["--local", "1", "--max-rps", "100", "--max-duration", "60"]) as s:
        modest = {"type": "constant", "rps": 20, "duration_s": 8}
        await s.tool_error("start_load_test", {"url": "http://example.com/", "pattern": modest}, "url")
        await s.tool_error("start_load_test", {"url": target.url, "pattern": dict(modest, rps=100_000)}, "rps", "pattern")
        await s.tool_error("start_load_test", {"url": target.url, "pattern": {"type": "ramp", "from_rps": 10, "to_rps": 5000,
                                                                             "duration_s": 2}}, "rps", "pattern")
        await s.tool_error("start_load_test", {"url": target.url, "pattern": dict(modest, duration_s=3600)}, "duration")
        # No way around them: not through a node named by URL (it would get the node token and the
        # work), nor a node registered off this machine, nor two load tasks each within the budget.
        await s.tool_error("start_load_test", {"url": target.url, "pattern": modest, "nodes": ["http://10.9.9.9:7071"]},
                           "nodes")
        await s.tool_error("register_node", {"name": "far", "url": "http://10.9.9.9:7071"}, "url")
        twice = scenario("twice", 1, ["true"])
        twice["targets"] = {"t": {"url": target.url}}
        twice["workload"]["tasks"] = [
            {"name": f"load-{i}", "kind": "load", "load": {"target": "t", "pattern": dict(modest, rps=60)}}
            for i in range(2)]
        await s.tool_error("submit_test_execution", {"scenario": twice}, "scenario.workload.tasks")
        check(target.requests == 0, f"no refused load reached the target: it saw {target.requests} requests")
        # Within the budget and on loopback, the same tool runs: the refusals were the guardrails'.
        deadline = time.monotonic() + 60
        while True:
            cluster = await s.ok("get_cluster_status", {})
            if node_count(cluster) == 1:
                break
            check(time.monotonic() < deadline, f"the local node registers within 60 s: {dump(cluster)}")
            await anyio.sleep(0.5)
        answer = await s.ok("start_load_test", {"url": target.url, "pattern": modest})
        id = answer.get("id")
        check(isinstance(id, str), f"start_load_test within the guardrails answers an id: {dump(answer)}")
        progress = Progress()
        view = await s.wait_ended(id, timeout_s=60, progress=progress)
        check(view["state"] == "succeeded", f"the modest load ends succeeded: {dump(view)}")
        check(target.requests >= 80, f"the modest load reached the target: {target.requests} requests (160 planned)")
        print(f"get_execution_status {id}: progress {progress.events}")
        # The nodes report live figures every second or so: over 8 s, some come.
        live = [int(m.group(1)) for _, _, text in progress.events for m in [re.search(r"(\d+) rps", text or "")] if m]
        check(any(rps > 0 for rps in live), f"get_execution_status {id} with wait_s sends the load's live rps "
                                            f"(20 planned) in its progress: {progress.events}")
        metrics = await s.ok("get_metrics", {"id": id})
        check(len(metrics.get("series") or []) >= 4, f"get_metrics {id}: a point per second of the 8 s load: {dump(metrics)}")
        # A node on loopback registers by name and URL alone: the service asks it what it offers.
        health = await s.ok("get_node_health", {"id": "local-1"})
        url = health["nodes"][0]["url"]
        view = await s.ok("register_node", {"name": "alias-1", "url": url})
        check(view.get("id") == "alias-1" and view.get("url") == url and view.get("resources"),
              f"register_node with a name and a URL: the node's resources come from the node: {dump(view)}")
    target.server.shutdown()


CASES = {
    "stdio_tools_and_schemas": stdio_tools_and_schemas,
    "stdio_bad_scenario_is_a_tool_error": functools.partial(bad_scenario_is_a_tool_error, transport="stdio"),
    "http_bad_scenario_is_a_tool_error": functools.partial(bad_scenario_is_a_tool_error, transport="http"),
    "stdio_simulation_and_sweep_with_progress": functools.partial(simulation_and_sweep_with_progress, transport="stdio"),
    "http_simulation_and_sweep_with_progress": functools.partial(simulation_and_sweep_with_progress, transport="http"),
    "stdio_execution_on_local_nodes": functools.partial(execution_on_local_nodes, transport="stdio"),
    "http_execution_on_local_nodes": functools.partial(execution_on_local_nodes, transport="http"),
    "stdio_drives_a_running_serve": stdio_drives_a_running_serve,
    "stdio_drives_a_serve_over_mutual_tls": stdio_drives_a_serve_over_mutual_tls,
    "stdio_cancel_stops_a_simulation": functools.partial(cancel_stops_a_simulation, transport="stdio"),
    "http_cancel_stops_a_simulation": functools.partial(cancel_stops_a_simulation, transport="http"),
    # A client of the handshake era sends notifications/cancelled, and closes the call's stream.
    "http_legacy_cancel_stops_a_simulation": functools.partial(cancel_stops_a_simulation, transport="http",
                                                               mode="legacy"),
    "http_refuses_without_token_and_foreign_origin": http_refuses_without_token_and_foreign_origin,
    "http_over_mutual_tls_refuses_strangers": http_over_mutual_tls_refuses_strangers,
    "guardrails_refuse_foreign_targets_and_budgets": guardrails_refuse_foreign_targets_and_budgets,
}


def reasons(error):
    """The checks that failed in `error`, looking inside the exception groups task groups raise."""
    if isinstance(error, BaseExceptionGroup):
        return [r for e in error.exceptions for r in reasons(e)]
    return [str(error)] if isinstance(error, Failed) else []


def main():
    if len(sys.argv) != 3 or sys.argv[2] not in CASES:
        print(f"usage: {sys.argv[0]} PATH-TO-DTEST {{{','.join(CASES)}}}", file=sys.stderr)
        return 2
    harness = Harness(sys.argv[1])
    started = time.monotonic()
    try:
        anyio.run(CASES[sys.argv[2]], harness)
        print(f"{sys.argv[2]}: passed in {time.monotonic() - started:.1f} s")
        return 0
    except BaseException as error:  # a Failed, an ExceptionGroup from a task group, or anything else
        print(f"{sys.argv[2]}: FAILED after {time.monotonic() - started:.1f} s")
        for reason in reasons(error):
            print(f"reason: {reason}")
        traceback.print_exc(file=sys.stdout)
        harness.print_logs()
        return 1
    finally:
        harness.kill_all()
        shutil.rmtree(harness.dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
