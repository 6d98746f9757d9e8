#!/usr/bin/env python3
"""How `dtest sim` scales with the cluster: the shape of scenarios/scale-1000.json at 100, 1,000
and 5,000 nodes (groups, tasks and kills scaled with the nodes), timed with peak memory, and with
`--instructions` also counted in instructions under valgrind (slow: minutes for 5,000 nodes).

    python3 benches/scaling.py [--instructions] [--nodes 100,1000,5000]

Wall time includes the memory hierarchy: as the simulated cluster outgrows the caches, each
message costs more cycles for the same instructions. The instruction count is the work done.
"""

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instructions", action="store_true", help="also count instructions with valgrind")
    parser.add_argument("--nodes", default="100,1000,5000")
    args = parser.parse_args()
    subprocess.run(["cargo", "build", "--release", "--quiet", "-p", "dtest"], cwd=ROOT, check=True)
    dtest = os.path.join(ROOT, "target", "release", "dtest")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for nodes in [int(n) for n in args.nodes.split(",")]:
            path = os.path.join(tmp, f"scaling-{nodes}.json")
            with open(path, "w") as f:
                json.dump(scenario(nodes), f)
            out = os.path.join(tmp, "report.json")
            timed = subprocess.run(
                ["/usr/bin/time", "-f", "%e %M", dtest, "sim", path, "--seed", "42", "--out", out],
                capture_output=True, text=True,
            )
            if timed.returncode != 0:
                print(timed.stdout, timed.stderr, file=sys.stderr)
                return 1
            wall, rss_kb = timed.stderr.strip().splitlines()[-1].split()
            with open(out) as f:
                messages = json.load(f)["messages"]["sent"]
            instructions = None
            if args.instructions:
                counted = subprocess.run(
                    ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
                     dtest, "sim", path, "--seed", "42", "--out", out],
                    capture_output=True, text=True,
                )
                found = re.search(r"I\s+refs:\s+([\d,]+)", counted.stderr)
                instructions = int(found.group(1).replace(",", "")) if found else None
            rows.append((nodes, float(wall), int(rss_kb) / 1024, messages, instructions))
    print(f"{'nodes':>6} {'wall s':>8} {'peak MB':>8} {'messages':>10} {'instructions':>14}  growth (n log n allows)")
    previous = None
    for nodes, wall, mb, messages, instructions in rows:
        growth = ""
        if previous:
            pn, pwall, _, pmessages, pinstr = previous
            allowed = nodes * math.log(nodes) / (pn * math.log(pn))
            growth = f"wall {wall / pwall:.1f}x, messages {messages / pmessages:.1f}x"
            if instructions and pinstr:
                growth += f", instructions {instructions / pinstr:.1f}x"
            growth += f" ({allowed:.1f}x)"
        shown = f"{instructions / 1e9:.1f} G" if instructions else "-"
        print(f"{nodes:>6} {wall:>8.2f} {mb:>8.0f} {messages:>10} {shown:>14}  {growth}")
        previous = (nodes, wall, mb, messages, instructions)
    return 0


if __name__ == "__main__":
    sys.exit(main())
