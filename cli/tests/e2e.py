"""What the end-to-end tests of `dtest serve` (serve_e2e.py) and `dtest mcp` (mcp_e2e.py) share:
checks, waits, the scenario of command tasks they run, and a target to aim load at."""

import os
import signal
import time

import requests

TERMINAL = {"succeeded", "failed", "cancelled", "interrupted"}


class Failed(Exception):
    """A check that did not hold."""


def check(condition, message):
    if not condition:
        raise Failed(message)


def wait_for(what, probe, timeout_s):
    """Polls `probe` until it returns something truthy; fails naming `what` after the timeout."""
    deadline = time.monotonic() + timeout_s
    last_error = None
    while time.monotonic() < deadline:
        try:
            value = probe()
            if value:
                return value
        except (requests.RequestException, OSError, ValueError) as e:
            last_error = e
        time.sleep(0.1)
    raise Failed(f"timed out after {timeout_s} s waiting for {what}" + (f" (last error: {last_error})" if last_error else ""))


def scenario(name, count, argv, timeout_s=60, duration_s=90, distribution="least_loaded", cpu=500):
    """A scenario of `count` command tasks on the three nodes of group `local`."""
    return {
        "name": name,
        "description": f"{name}: command tasks on three local nodes",
        "duration_s": duration_s,
        "cluster": {"groups": [{"name": "local", "count": 3, "resources": {"cpu_millis": 1000, "memory_mb": 1024}}]},
        "strategy": {"distribution": distribution, "allocation": "first_fit"},
        "workload": {"tasks": [{
            "name": "task", "count": count, "kind": "command", "requires": {"cpu_millis": cpu, "memory_mb": 64},
            "command": {"argv": argv, "timeout_s": timeout_s},
        }]},
        "faults": [],
        "expect": {"all_tasks_complete": True},
    }


class Target:
    """A loopback HTTP server that answers every GET with 200, counting requests."""

    def __init__(self):
        import http.server
        import threading
        target = self
        self.requests = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                target.requests += 1
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def tagged_pids(tag):
    """Every process but this one whose environment carries `DTEST_E2E_TAG=tag`: what a case
    started, and what those started in turn (the nodes' commands run in process groups of their
    own, so the tag they inherit is how they are found)."""
    needle = f"DTEST_E2E_TAG={tag}".encode()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if needle in f.read().split(b"\0"):
                    pids.append(int(entry))
        except OSError:
            pass
    return [p for p in pids if p != os.getpid()]


def kill_tagged(tag, timeout_s=10):
    """SIGKILLs every process tagged `tag` (see `tagged_pids`) until none is left, or warns
    after `timeout_s` naming those still alive."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pids = tagged_pids(tag)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.1)
    print(f"warning: processes still alive after teardown: {tagged_pids(tag)}")


def print_logs(prefixes):
    """The end of each `PREFIX.out` and `PREFIX.err` that holds anything, for a failed case."""
    for prefix in prefixes:
        for suffix in (".out", ".err"):
            try:
                with open(prefix + suffix, errors="replace") as f:
                    text = f.read()
            except OSError:
                continue
            if text.strip():
                print(f"---- {os.path.basename(prefix)}{suffix} (last 3000 characters) ----")
                print(text[-3000:])
