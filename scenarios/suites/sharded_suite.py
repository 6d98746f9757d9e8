#!/usr/bin/env python3
"""A small, real test suite that runs one shard of itself: `sharded_suite.py --shard I/N`.

`scenarios/sharded-tests.json` splits it into shards as command tasks, so that
`dtest run scenarios/sharded-tests.json --local 4` has real work to distribute. Test k belongs
to shard (k mod N) + 1. Each test checks something true about the standard library and takes
a few tens of milliseconds, as a unit test might. Exit 0 when every test of the shard passes.
"""

import argparse
import base64
import hashlib
import json
import sys
import time
import zlib


def make_tests():
    tests = []

    def add(name):
        def wrap(fn):
            tests.append((name, fn))
            return fn
        return wrap

    for n in range(12):
        @add(f"json_roundtrip_{n}")
        def _(n=n):
            doc = {"id": n, "tags": ["a"] * n, "nested": {"x": n * 1.5}}
            assert json.loads(json.dumps(doc)) == doc

    for n in range(12):
        @add(f"compress_roundtrip_{n}")
        def _(n=n):
            data = bytes(range(256)) * (n + 1)
            assert zlib.decompress(zlib.compress(data)) == data

    for n in range(12):
        @add(f"base64_roundtrip_{n}")
        def _(n=n):
            data = hashlib.sha256(str(n).encode()).digest()
            assert base64.b64decode(base64.b64encode(data)) == data

    for n in range(12):
        @add(f"sort_is_stable_{n}")
        def _(n=n):
            items = [(i % (n + 2), i) for i in range(200)]
            ordered = sorted(items, key=lambda t: t[0])
            for a, b in zip(ordered, ordered[1:]):
                assert a[0] < b[0] or (a[0] == b[0] and a[1] < b[1])

    return tests


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shard", required=True, help="I/N: run shard I of N (I from 1)")
    parser.add_argument("--delay-ms", type=int, default=20, help="pause per test, as real tests take time")
    args = parser.parse_args()
    try:
        index, count = (int(part) for part in args.shard.split("/"))
    except ValueError:
        parser.error(f"--shard expects I/N, found {args.shard!r}")
    if not 1 <= index <= count:
        parser.error(f"--shard {args.shard}: I must be between 1 and N")

    tests = make_tests()
    mine = [t for k, t in enumerate(tests) if k % count == index - 1]
    failed = 0
    for name, fn in mine:
        time.sleep(args.delay_ms / 1000)
        try:
            fn()
            print(f"ok   {name}")
        except AssertionError as e:
            failed += 1
            print(f"FAIL {name}: {e}")
    print(f"shard {index}/{count}: {len(mine) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
