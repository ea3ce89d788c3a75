"""Carries the embedding model to a lent GPU machine within its transfer limit.

The device tool moves at most 64 MiB per call and the model's weights are 90 MB
of f32, so `pack` stores the f32 matrices and embedding tables (the 2-D tensors)
as f16 (45 MB) beside the model's other files, and `unpack` widens them back to
f32 there. Those are exactly the tensors the GPU's f16 run stores as f16, so that
run sees the very weights it would from the original (rounding twice to f16 is
rounding once). The f32 run computes on the same f16-rounded values: no timing
changes, and the parity test's f32 bound still holds (their worst difference from
sentence-transformers is 7e-5 against 1e-4). The tiny-model tests, which check
the kernels against a naive reference, need no model.

    python scripts/gpu_model.py pack MODEL_DIR OUT_DIR
    python scripts/gpu_model.py unpack PACKED_DIR MODEL_DIR
"""

import shutil
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

WEIGHTS = "model.safetensors"


def convert(source: Path, target: Path, wide, narrow) -> None:
    """Copies the model directory `source` to `target`, its `wide` 2-D tensors as `narrow`."""
    shutil.copytree(source, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns(WEIGHTS, "*.lock"))
    tensors = {
        name: tensor.astype(narrow) if tensor.dtype == wide and tensor.ndim == 2 else tensor
        for name, tensor in load_file(source / WEIGHTS).items()
    }
    save_file(tensors, target / WEIGHTS)


def main() -> None:
    if len(sys.argv) != 4 or sys.argv[1] not in ("pack", "unpack"):
        sys.exit(__doc__)
    source, target = Path(sys.argv[2]), Path(sys.argv[3])
    if sys.argv[1] == "pack":
        convert(source, target, np.float32, np.float16)
    else:
        convert(source, target, np.float16, np.float32)


if __name__ == "__main__":
    main()
