#!/usr/bin/env python3
"""dtest load against wrk, both on one core, nginx on another as the target (issue 7's targets).

    python3 benches/load_vs_wrk.py [--seconds 10] [--connections 8] [--runs 3]

Installs nginx and wrk from Debian if missing, builds dtest in release mode, starts nginx on
loopback with its worker pinned to CPU 0, and then measures, generator pinned to CPU 1:

  throughput   wrk -t1 -cC vs dtest load --threads 1 -c C (closed model, as fast as answers
               come), the median of --runs runs each: requests/s and CPU time per request
               (user + system, from the kernel's accounting of the child);
  rate         dtest load --rate 5000 --duration 30s: the achieved rate against the target, and
               p99 corrected and uncorrected;
  merge        the criterion benchmark merging 100 node histograms.

Targets: throughput >= 0.9x wrk's, CPU per request <= 1.2x wrk's, rate within 1%, merge <= 10 ms.
Prints one line per figure and exits 1 if a target is missed. Not a test: timings belong here.
"""

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DTEST = os.path.join(ROOT, "target", "release", "dtest")


def ensure_tools():
    missing = [p for p in ("nginx", "wrk") if shutil.which(p) is None and not os.path.exists("/usr/sbin/" + p)]
    if missing:
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    subprocess.run(["cargo", "build", "--release", "--locked", "-p", "dtest"], cwd=ROOT, check=True)


def start_nginx(port):
    work = tempfile.mkdtemp(prefix="dtest-nginx-")
    os.makedirs(os.path.join(work, "logs"))
    conf = os.path.join(work, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""
worker_processes 1;
daemon off;
pid {work}/nginx.pid;
error_log {work}/logs/error.log;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 100000000;
  server {{ listen 127.0.0.1:{port}; location / {{ return 200 "hello\\n"; }} }}
}}
""")
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    proc = subprocess.Popen(["taskset", "-c", "0", nginx, "-c", conf, "-p", work])
    for _ in range(100):
        try:
            subprocess.run(["curl", "-sf", f"http://127.0.0.1:{port}/"], check=True, capture_output=True)
            return proc
        except subprocess.CalledProcessError:
            time.sleep(0.05)
    proc.kill()
    sys.exit("nginx did not start")


def timed(cmd):
    """Runs cmd; returns (stdout, CPU seconds it used)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return out, cpu


def wrk(url, connections, seconds):
    out, cpu = timed(["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", url])
    total = int(re.search(r"(\d+) requests in", out).group(1))
    return total / seconds, cpu / total


def dtest(url, connections, seconds, *extra):
    out, cpu = timed(["taskset", "-c", "1", DTEST, "load", url, "--json", "--threads", "1",
                      "-c", str(connections), "--duration", f"{seconds}s", *extra])
    report = json.loads(out)
    return report, cpu / max(report["requests"], 1)


def merge_ms():
    out = subprocess.run(["cargo", "bench", "--locked", "-p", "dtest-benches", "--bench", "measure", "--",
                          "merge/100-node-histograms"], cwd=ROOT, check=True, capture_output=True, text=True).stdout
    value, unit = re.search(r"time:\s+\[\S+ \S+ (\S+) (\S+)", out).groups()
    return float(value) * {"ns": 1e-6, "µs": 1e-3, "us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def measure(seconds=10, connections=8, runs=3, port=18099):
    """Every figure, as a dict; see the module's docstring."""
    ensure_tools()
    nginx = start_nginx(port)
    url = f"http://127.0.0.1:{port}/"
    try:
        w, d = [], []
        for _ in range(runs):
            w.append(wrk(url, connections, seconds))
            report, cpu = dtest(url, connections, seconds)
            d.append((report["rps"], cpu))
        rate_report, _ = dtest(url, 32, 30, "--rate", "5000")
    finally:
        nginx.terminate()
        nginx.wait()
    achieved = rate_report["requests"] / 30.0
    return {
        "seconds": seconds, "connections": connections, "runs": runs,
        "wrk_rps": statistics.median(x[0] for x in w),
        "wrk_cpu_s": statistics.median(x[1] for x in w),
        "dtest_rps": statistics.median(x[0] for x in d),
        "dtest_cpu_s": statistics.median(x[1] for x in d),
        "rate_achieved": achieved,
        "rate_off": abs(achieved - 5000) / 5000,
        "rate_dropped": rate_report["dropped"],
        "rate_p99_ms": rate_report["latency_ms"]["p99"],
        "rate_p99_uncorrected_ms": rate_report["latency_uncorrected_ms"]["p99"],
        "merge_ms": merge_ms(),
    }


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=int, default=10)
    p.add_argument("--connections", type=int, default=8)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--port", type=int, default=18099)
    args = p.parse_args()
    m = measure(args.seconds, args.connections, args.runs, args.port)
    throughput, cpu = m["dtest_rps"] / m["wrk_rps"], m["dtest_cpu_s"] / m["wrk_cpu_s"]
    print(f"throughput   wrk {m['wrk_rps']:,.0f} req/s, dtest {m['dtest_rps']:,.0f} req/s: {throughput:.2f}x "
          "(target >= 0.9x)")
    print(f"cpu/request  wrk {m['wrk_cpu_s'] * 1e6:.2f} us, dtest {m['dtest_cpu_s'] * 1e6:.2f} us: {cpu:.2f}x "
          "(target <= 1.2x)")
    print(f"rate         5,000 req/s for 30 s: {m['rate_achieved']:,.1f} achieved ({m['rate_off'] * 100:.3f}% off, "
          f"target <= 1%), {m['rate_dropped']} dropped; p99 {m['rate_p99_ms']:.3f} ms corrected, "
          f"{m['rate_p99_uncorrected_ms']:.3f} ms uncorrected")
    print(f"merge        100 node histograms in {m['merge_ms']:.2f} ms (target <= 10 ms)")
    ok = throughput >= 0.9 and cpu <= 1.2 and m["rate_off"] <= 0.01 and m["merge_ms"] <= 10
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
