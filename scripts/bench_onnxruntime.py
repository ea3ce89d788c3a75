"""ONNX Runtime baseline for `examples/embed_bench.rs`: the CPU reference that
text-embeddings-inference recommends on x86.

Exports the model's BERT encoder to ONNX (fp32, dynamic batch and sequence
axes) once, then runs the Rust benchmark's three cases over the same texts with
ONNX Runtime's CPU provider on the same threads. Tokenization, mean pooling
and L2 normalisation are included, as in Tessera's engine.

    python scripts/bench_onnxruntime.py [seconds per case] [--threads N]

The model directory comes from `INFERENCE_MODEL_DIR` (default
models/all-MiniLM-L6-v2); the export is kept in `.data/bench-onnx/`. Output
lines follow the Rust benchmark's, prefixed with "onnxruntime: ".
"""

import argparse
import os

import numpy as np
import onnxruntime
from tokenizers import Tokenizer

from bench_texts import padding_check, report

PREFIX = "onnxruntime: "
INPUTS = ["input_ids", "attention_mask", "token_type_ids"]
MAX_TOKENS = 256  # all-MiniLM-L6-v2's max_seq_length, as the Rust engine uses


def export(model_dir: str, path: str) -> None:
    """Writes the encoder (last hidden state) as ONNX with dynamic batch and sequence axes."""
    import torch
    from transformers import AutoModel

    bert = AutoModel.from_pretrained(model_dir).eval()

    class LastHiddenState(torch.nn.Module):
        # transformers 5's BertModel.forward wants keywords; the exporter passes positions.
        def __init__(self, encoder):
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.encoder(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    example = torch.ones(2, 16, dtype=torch.long)
    axes = {name: {0: "batch", 1: "sequence"} for name in INPUTS + ["last_hidden_state"]}
    torch.onnx.export(
        LastHiddenState(bert),
        (example, torch.ones_like(example), torch.zeros_like(example)),
        path,
        input_names=INPUTS,
        output_names=["last_hidden_state"],
        dynamic_axes=axes,
        opset_version=17,
        dynamo=False,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("seconds", nargs="?", type=float, default=5.0, help="seconds per case")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="intra-op threads")
    args = parser.parse_args()

    model_dir = os.environ.get("INFERENCE_MODEL_DIR", "models/all-MiniLM-L6-v2")
    cache = os.path.join(".data/bench-onnx", os.path.basename(os.path.normpath(model_dir)))
    os.makedirs(cache, exist_ok=True)
    path = os.path.join(cache, "model.onnx")
    if not os.path.exists(path):
        export(model_dir, path + ".partial")
        os.replace(path + ".partial", path)

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    tokenizer = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    tokenizer.enable_truncation(MAX_TOKENS)
    tokenizer.enable_padding()

    def embed(texts):
        encodings = tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        hidden = session.run(None, feeds)[0]
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / weights.sum(axis=1)
        return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)

    def token_counts(texts):
        return [sum(e.attention_mask) for e in tokenizer.encode_batch(texts)]

    print(
        f"{PREFIX}model {model_dir} on onnxruntime {onnxruntime.__version__} cpu "
        f"({args.threads} threads), {args.seconds:g} s per case",
        flush=True,
    )
    report(PREFIX, args.seconds, embed, token_counts)
    padding_check(PREFIX, embed)


if __name__ == "__main__":
    main()
