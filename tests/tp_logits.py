"""One rank of a tensor-parallel check (run under torchrun), or the unsharded reference (run plainly):
load a model directory through the caption backend, run one forward pass on fixed frames, save the logits.

usage: tp_logits.py MODEL_DIR OUT.pt
"""

import os
import sys

import numpy as np
import torch


def main(model_dir: str, out: str) -> None:
    from vidcap.backends.base import CaptionOptions, CaptionRequest
    from vidcap.backends.registry import make_backend, resolve_model

    if "WORLD_SIZE" in os.environ:
        from vidcap.runners.tp import init_group

        init_group("cpu")
    backend = make_backend(resolve_model(model_dir), CaptionOptions(device="cpu", dtype="float32"))
    backend.setup("cpu")
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, size=(backend.num_frames, 48, 64, 3), dtype=np.uint8)
    req = CaptionRequest(frames=frames, prompt="Describe the video in details.")
    inputs = backend.prepare([req]).inputs
    with torch.inference_mode():
        logits = backend.model(**inputs).logits
    if int(os.environ.get("RANK", "0")) == 0:
        torch.save(
            {
                "logits": logits,
                "tp": backend.tensor_parallel,
                "q_rows": backend.model.model.language_model.layers[0].self_attn.q_proj.weight.shape[0],
            },
            out,
        )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
