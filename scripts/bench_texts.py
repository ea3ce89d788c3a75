"""What the Python peers of `examples/embed_bench.rs` share with it.

The same deterministic texts (the Rust `text`, u64 wrapping), the same timing
loop (one warm-up, then runs for a budget, at least three) and the same cases
(three, and a fourth on a GPU), so that `task bench-inference` compares engines
on identical work.
"""

import time

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

# The batched cases: texts per batch, label and words per text (batch 1 uses one
# "short" text, seed 0). A GPU also runs GPU_CASE, ~128 tokens per text.
BATCH_CASES = [(32, "short", 12), (32, "long", 120)]
GPU_CASE = (256, "long", 110)
BATCH = 32


def text(seed: int, words: int) -> str:
    """A deterministic pseudo-random text of `words` words (the Rust `text`)."""
    state = (seed * 0x9E3779B97F4A7C15 + 1) & MASK
    picked = []
    for _ in range(words):
        state ^= (state << 13) & MASK
        state ^= state >> 7
        state ^= (state << 17) & MASK
        picked.append(WORDS[state % len(WORDS)])
    return " ".join(picked) + "."


def batch_texts(words: int, size: int = BATCH) -> list[str]:
    """The texts of a batched case (32 unless `size` says)."""
    return [text(seed, words) for seed in range(1, size + 1)]


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
    """The middle run."""
    return runs[len(runs) // 2]


def report(prefix: str, budget: float, embed, token_counts, gpu: bool = False) -> None:
    """Times the cases (with GPU_CASE when `gpu`) with `embed(texts)` and prints
    them in the Rust bench's words."""
    sentence = [text(0, 12)]
    tokens = token_counts(sentence)[0]
    runs = time_runs(budget, lambda: embed(sentence))
    print(
        f"{prefix}batch 1 ({tokens} tokens): median {median(runs) * 1e3:.2f} ms, "
        f"p90 {runs[len(runs) * 9 // 10] * 1e3:.2f} ms, min {runs[0] * 1e3:.2f} ms "
        f"({len(runs)} runs)",
        flush=True,
    )
    for size, label, words in BATCH_CASES + ([GPU_CASE] if gpu else []):
        batch = batch_texts(words, size)
        tokens = sum(token_counts(batch))
        runs = time_runs(budget, lambda: embed(batch))
        seconds = median(runs)
        print(
            f"{prefix}batch {size} {label} (~{words} words, {tokens / size:.0f} tokens avg): "
            f"{size / seconds:.1f} sentences/s, {tokens / seconds:.0f} tokens/s, "
            f"median {seconds * 1e3:.1f} ms per batch ({len(runs)} runs)",
            flush=True,
        )


def padding_check(prefix: str, embed) -> None:
    """Prints the cosine of the batch-1 sentence embedded alone and inside a padded
    batch of long passages: ~1.0 when the engine masks its padding."""
    sentence = [text(0, 12)]
    alone = embed(sentence)[0]
    padded = embed(sentence + batch_texts(120)[:31])[0]
    print(f"{prefix}check: cosine(batch-1 sentence alone, same in padded batch) = {float(alone @ padded):.6f}")
