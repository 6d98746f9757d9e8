#!/usr/bin/env python3
"""Every figure of the README's "Measured" section, measured now on this machine: one command that
prints the section's figures as Markdown, or writes them into README.md with --write-readme.

    python3 benches/measured.py [--write-readme] [--instructions] [--quick]

It builds dtest in release mode and runs, in turn:
  - the criterion benchmarks of dtest-benches (parsing, placement, heartbeats, orchestration,
    histogram merging, simulation) and of the node daemon (`cargo bench -p dtest --bench node`);
  - the budget guard's figures (`cargo bench -p dtest-benches --bench budgets -- --json`);
  - `dtest sim` of partition.json and scale-1000.json as whole processes, five runs each (the
    median), and a swarm sweep of 1,000 seeds of partition.json on every core;
  - benches/scaling.py's clusters of 100 to 10,000 nodes (`--instructions`: also under valgrind,
    which takes most of an hour);
  - `dtest run scenarios/sharded-tests.json --local 4`, three runs (the median);
  - benches/load_vs_wrk.py (nginx and wrk from Debian's packages, installed if missing).
About 15 minutes on the 2-core machine; `--quick` shortens criterion's measurements (for trying
the script, not for the README). Timings move with the machine and its neighbours; the budget
guard's figures and the ratios do not.
"""

import argparse
import datetime
import glob
import json
import os
import re
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DTEST = os.path.join(ROOT, "target", "release", "dtest")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import load_vs_wrk  # noqa: E402
import scaling  # noqa: E402

BEGIN = "<!-- measured: begin (python3 benches/measured.py --write-readme) -->"
END = "<!-- measured: end -->"


def step(what):
    print(f"==> {what}", file=sys.stderr, flush=True)


def cargo(*args):
    """Runs cargo in the workspace and returns its standard output; its errors go to ours."""
    return subprocess.run(["cargo", *args], cwd=ROOT, check=True, text=True, stdout=subprocess.PIPE).stdout


def criterion(benches, quick):
    """Runs dtest-benches' criterion benchmarks; returns {full id: median nanoseconds per iteration}."""
    extra = ["--warm-up-time", "1", "--measurement-time", "2"] if quick else []
    for bench in benches:
        step(f"criterion: {bench}")
        cargo("bench", "--locked", "-p", "dtest-benches", "--bench", bench, "--", *extra)
    medians = {}
    for path in glob.glob(os.path.join(ROOT, "target", "criterion", "**", "new", "benchmark.json"), recursive=True):
        with open(path) as f:
            full_id = json.load(f)["full_id"]
        with open(os.path.join(os.path.dirname(path), "estimates.json")) as f:
            medians[full_id] = json.load(f)["median"]["point_estimate"]
    return medians


def node_bench(quick):
    step("criterion: the node daemon")
    extra = ["--warm-up-time", "1", "--measurement-time", "2"] if quick else []
    err = subprocess.run(["cargo", "bench", "--locked", "-p", "dtest", "--bench", "node", "--", *extra], cwd=ROOT,
                         check=True, text=True, capture_output=True).stderr
    rss = re.search(r"idle RSS (\d+) kB", err).group(1)
    wire = re.search(r"a heartbeat is (\d+) bytes", err).group(1)
    p50, p99, worst = re.search(r"p50 ([\d.]+) ms, p99 ([\d.]+) ms, max ([\d.]+) ms", err).groups()
    return {"rss_mb": int(rss) / 1024, "heartbeat_bytes": int(wire), "p50": float(p50), "p99": float(p99),
            "max": float(worst)}


def budgets():
    step("budget guard figures")
    out = cargo("bench", "--locked", "-p", "dtest-benches", "--bench", "budgets", "--", "--json")
    return json.loads(out[out.index("{"):])


def median_run(cmd, runs):
    """Median wall seconds and peak RSS (MB) of `runs` runs of cmd, which must exit 0."""
    walls, peaks = [], []
    for _ in range(runs):
        code, wall, mb = scaling.timed(cmd, cwd=ROOT)
        if code != 0:
            sys.exit(f"{' '.join(cmd)} exited {code}")
        walls.append(wall)
        peaks.append(mb)
    return statistics.median(walls), statistics.median(peaks)


def sweep(seeds):
    step(f"a swarm sweep of {seeds} seeds")
    cmd = [DTEST, "sim", "scenarios/partition.json", "--seeds", f"0..{seeds}", "--swarm", "--json"]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    summary = json.loads(out)
    return {"wall_s": wall, "peak_mb": usage.ru_maxrss / 1024, "passed": summary["passed"],
            "failed": summary["failed"], "seeds": summary["seeds"]}


def fmt_rate(per_s):
    return f"{per_s / 1e6:.2f}M" if per_s >= 1e6 else f"{per_s / 1e3:.0f}k"


def fmt_time(ns):
    """Three significant digits, trailing zeros kept: 2.00 ms, 109 ms, 78.5 µs."""
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3), ("ns", 1)):
        if ns >= scale or unit == "ns":
            return f"{ns / scale:#.3g}".rstrip(".") + f" {unit}"


def section(c, node, guard, sims, swept, rows, run_s, load, cores):
    """The README's figures, as Markdown."""
    out = []
    today = datetime.date.today().isoformat()
    out.append(f"Measured on {today} on the {cores}-core development machine by `python3 benches/measured.py`, "
               "which prints this list; targets in brackets. Timings move with the machine and its neighbours; "
               "the budget guard's figures do not.\n")
    out.append(f"- Parsing and validating `partition.json` takes {fmt_time(c['scenario/parse/partition'])}, "
               f"`scale-1000.json` {fmt_time(c['scenario/parse/scale-1000'])}.")
    strategies = ["round_robin", "random", "least_loaded", "first_fit", "best_fit", "weighted", "adaptive",
                  "capability", "locality", "balanced"]
    targets = {"round_robin": "≥ 2M", "random": "≥ 2M", "least_loaded": "≥ 500k", "first_fit": "≥ 500k",
               "best_fit": "≥ 500k"}
    per_s = {(s, n): 100_000 / (c[f"placement/{n}-nodes/{s}"] * 1e-9) for s in strategies for n in (1000, 10000)}
    growth = max(per_s[(s, 1000)] / per_s[(s, 10000)] for s in strategies)
    placement_mb = guard["placement: 100,000 tasks onto 10,000 nodes"]["peak_heap_bytes"] / 1e6
    out.append(f"- Placing 100,000 tasks of mixed sizes onto heterogeneous clusters, in placements per second. The "
               f"cost per placement grows by at most {growth:.2f}× from 1,000 to 10,000 nodes (target ≤ 3×); "
               f"10,000 nodes holding 100,000 tasks take {placement_mb:.1f} MB of heap at the most (≤ 16 MB).\n")
    out.append("  | strategy | 1,000 nodes | 10,000 nodes |")
    out.append("  | --- | --- | --- |")
    for s in strategies:
        out.append(f"  | `{s}` ({targets.get(s, '≥ 200k')}) | {fmt_rate(per_s[(s, 1000)])} | "
                   f"{fmt_rate(per_s[(s, 10000)])} |")
    out.append("")
    heartbeats = 100_000 / (c["health/heartbeat/1000-nodes"] * 1e-9)
    out.append(f"- Handling a heartbeat (phi accrual update, health score, debounced state), 1,000 nodes: "
               f"{heartbeats / 1e6:.1f}M per second (target ≥ 1M).")
    small = c["orchestration/result-and-replace/1000-nodes-10000-in-flight"] / 1000
    large = c["orchestration/result-and-replace/10000-nodes-100000-in-flight"] / 1000
    out.append(f"- One orchestration step (a result arrives, acknowledgements both ways, a tick, the task placed "
               f"again and assigned): {fmt_time(small)} with 1,000 nodes and 10,000 tasks in flight, "
               f"{fmt_time(large)} with 10,000 nodes and 100,000 in flight ({large / small:.2f}× the cost for 10× "
               "the cluster).")
    p, s = sims["partition"], sims["scale-1000"]
    rate = swept["seeds"] / swept["wall_s"] * 60
    out.append(f"- `dtest sim` as a whole process (release build, median of 5 runs): `partition.json` (120 nodes, "
               f"up to 600 simulated seconds) {p[0]:.2f} s and {p[1]:.0f} MB peak (targets ≤ 0.15 s, ≤ 40 MB); "
               f"`scale-1000.json` (1,000 nodes, 20,000 tasks, a million simulated requests) {s[0]:.2f} s and "
               f"{s[1]:.0f} MB (≤ 4 s, ≤ 80 MB). Criterion, in process: {fmt_time(c['sim/partition'])} and "
               f"{fmt_time(c['sim/scale-1000'])}. A swarm sweep of `partition.json` on {cores} cores: "
               f"{swept['seeds']:,} seeds in {swept['wall_s']:.1f} s ({rate:,.0f} seeds a minute, target ≥ 700), "
               f"{swept['peak_mb']:.0f} MB peak (≤ 300 MB); {swept['passed']:,} passed, {swept['failed']} failed.")
    out.append("- Scaling (`python3 benches/scaling.py`: the shape of `scale-1000.json` from 100 to 10,000 nodes; "
               "targets: 5,000 nodes ≤ 40 s and ≤ 350 MB, 10,000 ≤ 1 GB):\n")
    out.append("  ```")
    out.extend(("  " + line).rstrip() for line in scaling.table(rows).splitlines())
    out.append("  ```")
    b = guard["sim partition --seed 42"], guard["sim scale-1000 --seed 42"]
    sweep30 = guard["sim partition --seeds 0..30 --swarm, 1 thread"]
    out.append(f"- The budget guard's figures (`cargo bench -p dtest-benches --bench budgets`, the same on every "
               f"run; CI fails when one exceeds `benches/budgets.json`): `partition.json` "
               f"{b[0]['peak_heap_bytes'] / 1e6:.1f} MB peak heap, {b[0]['allocations']:,} allocations, "
               f"{b[0]['messages']:,} messages, {b[0]['letters']:,} letters (frames and alarms delivered), "
               f"{b[0]['events']:,} orchestrator events; `scale-1000.json` {b[1]['peak_heap_bytes'] / 1e6:.1f} MB, "
               f"{b[1]['allocations']:,} allocations, {b[1]['messages']:,} messages, {b[1]['letters']:,} letters, "
               f"{b[1]['events']:,} events; 30 swarm seeds of `partition.json` one after another "
               f"{sweep30['peak_heap_bytes'] / 1e6:.1f} MB peak heap, about one seed's.")
    out.append(f"- `dtest node` (`cargo bench -p dtest --bench node`, real daemons on loopback): idle RSS "
               f"{node['rss_mb']:.1f} MB (target ≤ 20 MB); a heartbeat is {node['heartbeat_bytes']} bytes on the "
               f"wire with its HTTP response (target ≤ 512); 1,000 assignments decided in ten waves and "
               f"dispatched to 4 daemons, decision to acknowledgement p50 {node['p50']:.2f} ms, p99 "
               f"{node['p99']:.2f} ms, max {node['max']:.1f} ms (target p99 ≤ 50 ms).")
    out.append(f"- `dtest run scenarios/sharded-tests.json --local 4`: {run_s:.1f} s from start to exit, daemons "
               "included (median of 3).")
    throughput, cpu = load["dtest_rps"] / load["wrk_rps"], load["dtest_cpu_s"] / load["wrk_cpu_s"]
    out.append(f"- `dtest load` against wrk (`python3 benches/load_vs_wrk.py`: nginx on CPU 0, the generator on "
               f"CPU 1, {load['connections']} connections, median of {load['runs']} runs of {load['seconds']} s): "
               f"wrk {load['wrk_rps']:,.0f} requests/s, `dtest load --threads 1` {load['dtest_rps']:,.0f}: "
               f"**{throughput:.2f}×** wrk's throughput (target ≥ 0.9×) at **{cpu:.2f}×** its CPU time per request "
               f"({load['dtest_cpu_s'] * 1e6:.2f} µs against {load['wrk_cpu_s'] * 1e6:.2f} µs; target ≤ 1.2×). "
               f"At `--rate 5000` for 30 s the achieved rate was {load['rate_achieved']:,.1f} requests/s "
               f"({load['rate_off'] * 100:.3f}% off; target ≤ 1%), with p99 {load['rate_p99_ms']:.3f} ms corrected "
               f"and {load['rate_p99_uncorrected_ms']:.3f} ms uncorrected.")
    out.append(f"- Merging 100 nodes' latency histograms (`cargo bench -p dtest-benches --bench measure`): "
               f"{fmt_time(c['measure/merge/100-node-histograms'])} (target ≤ 10 ms); whole 30-second results "
               f"with their per-second series, {fmt_time(c['measure/merge/100-nodes-decoded'])} already decoded "
               f"and {fmt_time(c['measure/merge/100-nodes-from-wire'])} from the wire.")
    return "\n".join(out) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write-readme", action="store_true", help="replace the figures in README.md")
    parser.add_argument("--instructions", action="store_true", help="also count the scaling runs' instructions")
    parser.add_argument("--quick", action="store_true", help="shorter criterion measurements (not for the README)")
    args = parser.parse_args()
    cores = os.cpu_count()
    step("building dtest (release)")
    scaling.build()
    c = criterion(["scenario", "placement", "health", "orchestration", "measure", "sim"], args.quick)
    node = node_bench(args.quick)
    guard = budgets()
    sims = {}
    for name in ("partition", "scale-1000"):
        step(f"dtest sim {name}.json, 5 runs")
        sims[name] = median_run([DTEST, "sim", os.path.join(ROOT, "scenarios", f"{name}.json"), "--seed", "42"], 5)
    swept = sweep(1000)
    step("scaling: 100 to 10,000 nodes")
    rows = scaling.measure([100, 1000, 5000, 10000], args.instructions)
    step("dtest run of the sharded suite on 4 local nodes, 3 runs")
    run_s, _ = median_run([DTEST, "run", os.path.join(ROOT, "scenarios", "sharded-tests.json"), "--local", "4"], 3)
    step("dtest load against wrk")
    load = load_vs_wrk.measure(seconds=5, connections=8, runs=3)
    text = section(c, node, guard, sims, swept, rows, run_s, load, cores)
    print(text, end="")
    if args.write_readme:
        path = os.path.join(ROOT, "README.md")
        with open(path) as f:
            readme = f.read()
        if BEGIN not in readme or END not in readme:
            sys.exit(f"README.md has no {BEGIN} ... {END} block")
        head, rest = readme.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        with open(path, "w") as f:
            f.write(f"{head}{BEGIN}\n{text}{END}{tail}")
        step("README.md updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
