"""PyTorch baseline for `examples/embed_bench.rs`.

Runs the Rust embedding benchmark's cases (batch 1 latency of a ~12-word
sentence; batches of 32 ~12-word sentences and of 32 ~120-word passages; on CUDA
also 256 ~110-word passages) with sentence-transformers, over the same
deterministic texts, so that `task bench-inference` can put Tessera's engine and
the reference implementation side by side on the same machine in the same run.

    python scripts/bench_pytorch.py [seconds per case] [--threads N] [--device cuda [--fp16]]

The model directory comes from `INFERENCE_MODEL_DIR` (default
models/all-MiniLM-L6-v2). Output lines follow the Rust benchmark's, prefixed
with "pytorch: " on the CPU, "pytorch-cuda: " on CUDA in fp32 and
"pytorch-cuda-fp16: " with --fp16.
"""

import argparse
import os

import torch
from sentence_transformers import SentenceTransformer

from bench_texts import padding_check, report



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("seconds", nargs="?", type=float, default=5.0, help="seconds per case")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--fp16", action="store_true", help="half-precision weights (CUDA)")
    args = parser.parse_args()
    if args.fp16 and args.device != "cuda":
        parser.error("--fp16 is for --device cuda")
    prefix = {
        ("cpu", False): "pytorch: ",
        ("cuda", False): "pytorch-cuda: ",
        ("cuda", True): "pytorch-cuda-fp16: ",
    }[(args.device, args.fp16)]

    torch.set_num_threads(args.threads)
    model_dir = os.environ.get("INFERENCE_MODEL_DIR", "models/all-MiniLM-L6-v2")
    model = SentenceTransformer(model_dir, device=args.device)
    if args.fp16:
        model.half()
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

    where = (
        f"{torch.cuda.get_device_name()} ({'fp16' if args.fp16 else 'fp32'})"
        if args.device == "cuda"
        else f"cpu ({torch.get_num_threads()} threads)"
    )
    print(
        f"{prefix}model {model_dir} on torch {torch.__version__} {where}, "
        f"{args.seconds:g} s per case",
        flush=True,
    )

    report(prefix, args.seconds, embed, token_counts, gpu=args.device == "cuda")
    padding_check(prefix, embed)


if __name__ == "__main__":
    main()
