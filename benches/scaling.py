#!/usr/bin/env python3
"""How `dtest sim` scales with the cluster: the shape of scenarios/scale-1000.json at 100, 1,000,
5,000 and 10,000 nodes (groups, tasks and kills scaled with the nodes), timed with peak memory,
and with `--instructions` also counted in instructions under valgrind (slow: minutes for the
largest).

    python3 benches/scaling.py [--instructions] [--nodes 100,1000,5000,10000]

Wall time includes the memory hierarchy: as the simulated cluster outgrows the caches, each
message costs more cycles for the same instructions. The instruction count is the work done.
Targets (issue 13): 1,000 nodes in at most 4 s and 80 MB; 5,000 in at most 40 s and 350 MB;
10,000 within 1 GB.
"""

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DTEST = os.path.join(ROOT, "target", "release", "dtest")


def scenario(nodes: int) -> dict:
    """scale-1000.json with every count scaled by nodes / 1000."""
    with open(os.path.join(ROOT, "scenarios", "scale-1000.json")) as f:
        s = json.load(f)
    factor = nodes / 1000
    s["name"] = f"scaling-{nodes}"
    for group in s["cluster"]["groups"]:
        group["count"] = max(1, round(group["count"] * factor))
    for task in s["workload"]["tasks"]:
        task["count"] = max(1, round(task["count"] * factor))
    kills = []
    for group in s["cluster"]["groups"]:
        kills += [f"{group['name']}-{i}" for i in range(1, group["count"] // 15 + 1)]
    faults = [f for f in s["faults"] if f["type"] != "kill"]
    faults.append({"at_s": 90, "type": "kill", "nodes": kills, "restart_at_s": 200})
    s["faults"] = faults
    return s


def timed(cmd, cwd=None):
    """Runs cmd with its output discarded; returns (exit code, wall seconds, peak RSS in MB)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    return os.waitstatus_to_exitcode(status), wall, usage.ru_maxrss / 1024


def build():
    subprocess.run(["cargo", "build", "--release", "--quiet", "--locked", "-p", "dtest"], cwd=ROOT, check=True)


def measure(node_counts, instructions=False):
    """One row per cluster size: nodes, wall_s, peak_mb, messages, instructions (or None)."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for nodes in node_counts:
            path = os.path.join(tmp, f"scaling-{nodes}.json")
            with open(path, "w") as f:
                json.dump(scenario(nodes), f)
            out = os.path.join(tmp, "report.json")
            code, wall, mb = timed([DTEST, "sim", path, "--seed", "42", "--out", out])
            if code != 0:
                sys.exit(f"dtest sim of {nodes} nodes exited {code}")
            with open(out) as f:
                messages = json.load(f)["messages"]["sent"]
            counted = None
            if instructions:
                run = subprocess.run(
                    ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
                     DTEST, "sim", path, "--seed", "42", "--out", out],
                    capture_output=True, text=True,
                )
                found = re.search(r"I\s+refs:\s+([\d,]+)", run.stderr)
                counted = int(found.group(1).replace(",", "")) if found else None
            rows.append({"nodes": nodes, "wall_s": wall, "peak_mb": mb, "messages": messages,
                         "instructions": counted})
    return rows


def table(rows):
    lines = [f"{'nodes':>6} {'wall s':>8} {'peak MB':>8} {'messages':>10} {'instructions':>14}  "
             "growth (n log n allows)"]
    previous = None
    for r in rows:
        growth = ""
        if previous:
            allowed = r["nodes"] * math.log(r["nodes"]) / (previous["nodes"] * math.log(previous["nodes"]))
            growth = (f"wall {r['wall_s'] / previous['wall_s']:.1f}x, "
                      f"messages {r['messages'] / previous['messages']:.1f}x")
            if r["instructions"] and previous["instructions"]:
                growth += f", instructions {r['instructions'] / previous['instructions']:.1f}x"
            growth += f" ({allowed:.1f}x)"
        shown = f"{r['instructions'] / 1e9:.1f} G" if r["instructions"] else "-"
        lines.append(f"{r['nodes']:>6} {r['wall_s']:>8.2f} {r['peak_mb']:>8.0f} {r['messages']:>10} {shown:>14}  "
                     f"{growth}")
        previous = r
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instructions", action="store_true", help="also count instructions with valgrind")
    parser.add_argument("--nodes", default="100,1000,5000,10000")
    args = parser.parse_args()
    build()
    print(table(measure([int(n) for n in args.nodes.split(",")], args.instructions)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
