"""Prints how Tessera's engine compares with each peer measured in the same run.

Reads the combined output of `task bench-inference` (Tessera's f32 lines, its
"tessera-bf16: " lines, then the peers' lines: "pytorch: " and "onnxruntime: "
on the CPU, "pytorch-cuda: " and "pytorch-cuda-fp16: " on a GPU) on stdin and
prints, per case and precision, every peer's figure and Tessera's ratio to it,
the faster side above 1. When the run measured every engine several times
(ROUNDS), each engine's best figure per case is the one compared: this
machine's speed drifts over minutes, and the best run is the least disturbed.

    ... | python scripts/bench_ratios.py
"""

import re
import sys

PEERS = ["pytorch", "onnxruntime", "pytorch-cuda", "pytorch-cuda-fp16"]
TESSERA_BF16 = "tessera-bf16"
PREFIXED = PEERS + [TESSERA_BF16]
BATCH_1 = re.compile(r"batch 1 \(\d+ tokens\): median ([\d.]+) ms")
BATCHED = re.compile(r"batch (\d+) (short|long) \(.*?\): ([\d.]+) sentences/s")


def figures(lines):
    """{case: best value} from one engine's lines: the lowest latency in ms, the
    highest throughput in sentences/s."""
    found = {}
    for line in lines:
        if match := BATCH_1.search(line):
            case, value = "batch 1 latency (ms)", float(match.group(1))
            found[case] = min(value, found.get(case, value))
        elif match := BATCHED.search(line):
            case = f"batch {match.group(1)} {match.group(2)} (sentences/s)"
            value = float(match.group(3))
            found[case] = max(value, found.get(case, value))
    return found


def main() -> None:
    lines = sys.stdin.read().splitlines()
    prefixed = lambda name: [l for l in lines if l.startswith(f"{name}: ")]
    ours = {
        "tessera": figures(l for l in lines if not any(l.startswith(f"{p}: ") for p in PREFIXED)),
        TESSERA_BF16: figures(prefixed(TESSERA_BF16)),
    }
    peers = {peer: figures(prefixed(peer)) for peer in PEERS}
    print("ratios (each engine's best run; Tessera ÷ peer; above 1: Tessera is faster):")
    for engine, cases in ours.items():
        for case, value in cases.items():
            for peer in PEERS:
                theirs = peers[peer].get(case)
                if theirs is None:
                    continue
                speedup = theirs / value if "latency" in case else value / theirs
                print(f"  {case}: {engine} {value:g} vs {peer} {theirs:g} -> {speedup:.2f}x")


if __name__ == "__main__":
    main()
