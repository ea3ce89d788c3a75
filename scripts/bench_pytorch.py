"""PyTorch baseline for `examples/embed_bench.rs`.

Runs the Rust embedding benchmark's three cases (batch 1 latency of a ~12-word
sentence; batches of 32 ~12-word sentences and of 32 ~120-word passages) with
sentence-transformers on the CPU, over the same deterministic texts, so that
`task bench-inference` can put Tessera's engine and the reference implementation
side by side on the same machine in the same run.

    python scripts/bench_pytorch.py [seconds per case] [--threads N]

The model directory comes from `INFERENCE_MODEL_DIR` (default
models/all-MiniLM-L6-v2). Output lines follow the Rust benchmark's, prefixed
with "pytorch: ".
"""

import argparse
import os
import time

import torch
from sentence_transformers import SentenceTransformer

# The same list, in the same order, as WORDS in examples/embed_bench.rs.
WORDS = [
    "the", "service", "stores", "every", "request", "in", "a", "durable", "queue",
    "while", "workers", "compute", "embeddings", "for", "documents", "that", "users",
    "upload", "from", "their", "phones", "and", "laptops", "during", "long",
    "meetings", "about", "quarterly", "budgets", "river", "mountain", "library",
    "coffee", "morning", "network", "latency", "careful", "engineers", "measure",
    "results", "before", "shipping", "new", "features",
]

MASK = 0xFFFFFFFFFFFFFFFF
PREFIX = "pytorch: "


def text(seed: int, words: int) -> str:
    """A deterministic pseudo-random text of `words` words (the Rust `text`, u64 wrapping)."""
    state = (seed * 0x9E3779B97F4A7C15 + 1) & MASK
    picked = []
    for _ in range(words):
        state ^= (state << 13) & MASK
        state ^= state >> 7
        state ^= (state << 17) & MASK
        picked.append(WORDS[state % len(WORDS)])
    return " ".join(picked) + "."


def time_runs(budget: float, work) -> list[float]:
    """Runs `work` repeatedly for about `budget` seconds after one warm-up; sorted durations."""
    work()
    runs = []
    started = time.perf_counter()
    while time.perf_counter() - started < budget or len(runs) < 3:
        run = time.perf_counter()
        work()
        runs.append(time.perf_counter() - run)
    runs.sort()
    return runs


def median(runs: list[float]) -> float:
    return runs[len(runs) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("seconds", nargs="?", type=float, default=5.0, help="seconds per case")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    model_dir = os.environ.get("INFERENCE_MODEL_DIR", "models/all-MiniLM-L6-v2")
    model = SentenceTransformer(model_dir, device="cpu")
    max_len = model.max_seq_length  # 256 for all-MiniLM-L6-v2, as the Rust engine uses

    def embed(texts):
        return model.encode(
            texts,
            batch_size=len(texts),
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )

    def token_counts(texts):
        # Special tokens included, truncated at max_seq_length: the Rust `token_counts`.
        ids = model.tokenizer(texts, truncation=True, max_length=max_len)["input_ids"]
        return [len(i) for i in ids]

    print(
        f"{PREFIX}model {model_dir} on torch {torch.__version__} cpu "
        f"({torch.get_num_threads()} threads), {args.seconds:g} s per case",
        flush=True,
    )

    sentence = [text(0, 12)]
    tokens = token_counts(sentence)[0]
    runs = time_runs(args.seconds, lambda: embed(sentence))
    print(
        f"{PREFIX}batch 1 ({tokens} tokens): median {median(runs) * 1e3:.2f} ms, "
        f"p90 {runs[len(runs) * 9 // 10] * 1e3:.2f} ms, min {runs[0] * 1e3:.2f} ms "
        f"({len(runs)} runs)",
        flush=True,
    )

    for label, words in [("short", 12), ("long", 120)]:
        batch = [text(seed, words) for seed in range(1, 33)]
        tokens = sum(token_counts(batch))
        runs = time_runs(args.seconds, lambda: embed(batch))
        seconds = median(runs)
        print(
            f"{PREFIX}batch 32 {label} (~{words} words, {tokens / 32:.0f} tokens avg): "
            f"{32 / seconds:.1f} sentences/s, {tokens / seconds:.0f} tokens/s, "
            f"median {seconds * 1e3:.1f} ms per batch ({len(runs)} runs)",
            flush=True,
        )

    # Sanity check: the batch-1 sentence embedded alone and inside a padded batch of
    # long passages must agree (cosine ~1.0), i.e. padding is masked out.
    alone = embed(sentence)[0]
    padded = embed(sentence + [text(seed, 120) for seed in range(1, 32)])[0]
    print(f"{PREFIX}check: cosine(batch-1 sentence alone, same in padded batch) = {float(alone @ padded):.6f}")


if __name__ == "__main__":
    main()
