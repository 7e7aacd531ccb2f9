"""vidcap's own generation engine for the in-process VLMs (gpt-fast's shape, vLLM's scheduling).

The model's own forward does what differs per family (vision tower, projector/pooling, merging visual
tokens, multimodal positions) for a group of new clips at once; vidcap then owns the decode loop: a static
KV cache of `slots` sequences, one decode step over the language model's modules captured in CUDA graphs
for a few batch buckets, continuous batching (a finished caption frees its slot for the next clip at once)
and a shared prompt prefix whose KV is computed once and attended by every slot (cascade attention).

Why our own loop: `generate()`'s fast path depends on heuristics that held on one GPU and not the next
(docs/benchmarks.md), it cannot refill a slot mid-batch, and transformers' paged continuous-batching
manager measured 4x slower than a static cache on the H200 (DESIGN.md).
"""

from ..rows import ListSource
from .lm import DecoderLM, Unsupported
from .scheduler import Engine, EngineStats

__all__ = ["DecoderLM", "Engine", "EngineStats", "ListSource", "Unsupported"]
