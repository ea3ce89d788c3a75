"""Prints how Tessera's engine compares with each peer measured in the same run.

Reads the combined output of `task bench-inference` (Tessera's lines, then
"pytorch: " and "onnxruntime: " lines) on stdin and prints, per case, every
peer's figure and Tessera's ratio to it, the faster side above 1.

    ... | python scripts/bench_ratios.py
"""

import re
import sys

PEERS = ["pytorch", "onnxruntime"]
BATCH_1 = re.compile(r"batch 1 \(\d+ tokens\): median ([\d.]+) ms")
BATCH_32 = re.compile(r"batch 32 (short|long) \(.*?\): ([\d.]+) sentences/s")


def figures(lines):
    """{case: value} from one engine's lines: latency in ms, throughput in sentences/s."""
    found = {}
    for line in lines:
        if match := BATCH_1.search(line):
            found["batch 1 latency (ms)"] = float(match.group(1))
        elif match := BATCH_32.search(line):
            found[f"batch 32 {match.group(1)} (sentences/s)"] = float(match.group(2))
    return found


def main() -> None:
    lines = sys.stdin.read().splitlines()
    engines = {"tessera": figures(l for l in lines if not any(l.startswith(f"{p}: ") for p in PEERS))}
    for peer in PEERS:
        engines[peer] = figures(l for l in lines if l.startswith(f"{peer}: "))
    print("ratios (Tessera ÷ peer; above 1: Tessera is faster):")
    for case, ours in engines["tessera"].items():
        for peer in PEERS:
            theirs = engines[peer].get(case)
            if theirs is None:
                continue
            speedup = theirs / ours if "latency" in case else ours / theirs
            print(f"  {case}: tessera {ours:g} vs {peer} {theirs:g} -> {speedup:.2f}x")


if __name__ == "__main__":
    main()
