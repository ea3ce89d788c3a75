"""Writes tests/fixtures/minilm_passages.json: sentence-transformers' embeddings
of texts that stress what short sentences do not (a 169-token passage, one
near the 256-token limit, unicode, SQL-looking text, one word repeated), in the
format of minilm_reference.json, so the engine's parity tests hold every backend
and precision to them.

    .data/bench-venv/bin/python scripts/reference_passages.py [MODEL_DIR]

(the venv `task bench-inference` creates has sentence-transformers).
"""

import json
import platform
import sys
from pathlib import Path

import numpy
import sentence_transformers
import tokenizers
import torch
import transformers
from sentence_transformers import SentenceTransformer

PASSAGE = (
    "Durable background jobs are stored in PostgreSQL so that a worker which "
    "crashes halfway through a task never loses it: the row stays claimed only "
    "while its lease is renewed, and once the lease lapses another worker picks "
    "the job up again from its last recorded checkpoint. Clients submit work "
    "over the versioned REST API, follow its progress as a stream of events, "
    "cancel it while it waits in the queue, or retry it after a failure with "
    "the same idempotency key, which keeps a nervous user who clicks twice from "
    "running the same expensive job two times. Embeddings are computed by the "
    "service's own encoder, on the graphics card when there is one and on the "
    "processor otherwise, behind an endpoint that speaks the same dialect as "
    "the hosted APIs most teams already use."
)

TEXTS = [
    PASSAGE,
    " ".join([PASSAGE, PASSAGE.split(": ")[0] + "."] * 2)[:1150],
    "Zürich café naïve façade — 東京の天気は晴れです; Привет, мир! 🙂 ½ ≠ ¼, ǅemal Ωmega.",
    "'; DROP TABLE users; -- SELECT * FROM accounts WHERE id = 1 OR 1=1 /* */ UNION ALL SELECT password FROM admins;",
    " ".join(["buffalo"] * 60),
]


def main() -> None:
    model_dir = Path(sys.argv[1] if len(sys.argv) > 1 else "models/all-MiniLM-L6-v2")
    model = SentenceTransformer(str(model_dir), device="cpu")
    model.max_seq_length = 256
    embeddings = model.encode(TEXTS, normalize_embeddings=True, convert_to_numpy=True)
    tokenizer = model.tokenizer
    sentences = []
    for text, embedding in zip(TEXTS, embeddings):
        ids = tokenizer(text, truncation=True, max_length=256)["input_ids"]
        sentences.append({"text": text, "input_ids": ids, "embedding": embedding.astype(float).tolist()})
    fixture = {
        "model": f"sentence-transformers/all-MiniLM-L6-v2 from {model_dir}",
        "pipeline": "as minilm_reference.json: mean pooling, L2 normalisation, max_seq_length 256",
        "produced_with": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "sentence_transformers": sentence_transformers.__version__,
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
            "numpy": numpy.__version__,
        },
        "sentences": sentences,
        "cosine_pairs": {},
    }
    target = Path(__file__).resolve().parent.parent / "tests/fixtures/minilm_passages.json"
    target.write_text(json.dumps(fixture, indent=1) + "\n")
    print(f"{target}: {[len(s['input_ids']) for s in sentences]} tokens")


if __name__ == "__main__":
    main()
