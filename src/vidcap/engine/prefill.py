"""The prefill side of the engine: the model's own forward over a group of clips (vision tower, projector,
visual-token merge, multimodal positions all stay transformers'), with a cache object whose layers write
each group's keys and values straight into the engine's slots and hand the attention the shared prefix.

Clips are right-padded: with causal attention a real token never sees a pad after it, so positions and
keys are those of the clip alone, and the first new token is read at each clip's own last position.
"""

from __future__ import annotations

import inspect
from functools import cache

from ..errors import CONTEXT, format_error


@cache
def _slot_layer_class():
    """Defined on first use: transformers is imported only by runs that load a model."""
    from transformers.cache_utils import DynamicLayer

    class SlotLayer(DynamicLayer):
        """One decoder layer's cache during prefill: stores nothing itself. `sink(k, v)` takes the group's
        keys and values; `prefix` ([kv_heads, P, head_dim] keys, values) is put in front for attention."""

        def __init__(self, sink, prefix=None):
            super().__init__()
            self.sink, self.prefix = sink, prefix
            self.is_initialized = True

        def update(self, key_states, value_states, *args, **kwargs):
            import torch

            self.sink(key_states, value_states)
            if self.prefix is None:
                return key_states, value_states
            b = key_states.shape[0]
            pk, pv = (t[None].expand(b, -1, -1, -1) for t in self.prefix)
            return torch.cat((pk, key_states), dim=2), torch.cat((pv, value_states), dim=2)

        def get_seq_length(self) -> int:
            return 0 if self.prefix is None else int(self.prefix[0].shape[1])

        def get_mask_sizes(self, query_length, *args, **kwargs) -> tuple[int, int]:
            return self.get_seq_length() + int(query_length), 0

    return SlotLayer


def slot_cache(n_layers: int, sinks, prefixes):
    """A transformers cache whose layers write into the engine's slots (see SlotLayer)."""
    from transformers.cache_utils import DynamicCache

    layer = _slot_layer_class()
    cache = DynamicCache()
    cache.layers = [layer(sinks[i], None if prefixes is None else prefixes[i]) for i in range(n_layers)]
    return cache


@cache
def _row_prefix_layer_class():
    from transformers.cache_utils import DynamicLayer

    class RowPrefixLayer(DynamicLayer):
        """Like SlotLayer, with a prefix of its own per row: `prefix()` gives [B, kv_heads, P, head_dim] keys
        and values, read when the layer runs (one layer's worth in memory at a time); the attention mask
        hides what a row does not own."""

        def __init__(self, sink, prefix, length: int):
            super().__init__()
            self.sink, self.prefix, self.length = sink, prefix, length
            self.is_initialized = True

        def update(self, key_states, value_states, *args, **kwargs):
            import torch

            pk, pv = self.prefix()  # before the sink writes this layer's new keys into the slots
            self.sink(key_states, value_states)
            return torch.cat((pk, key_states), dim=2), torch.cat((pv, value_states), dim=2)

        def get_seq_length(self) -> int:
            return self.length

        def get_mask_sizes(self, query_length, *args, **kwargs) -> tuple[int, int]:
            return self.length + int(query_length), 0

    return RowPrefixLayer


def row_prefix_cache(n_layers: int, sinks, prefixes, length: int):
    """A transformers cache whose layers write into the engine's slots and attend a per-row prefix of
    `length` positions (see RowPrefixLayer; used for the suffixes of `--variants`)."""
    from transformers.cache_utils import DynamicCache

    layer = _row_prefix_layer_class()
    cache = DynamicCache()
    cache.layers = [layer(sinks[i], prefixes[i], length) for i in range(n_layers)]
    return cache


def context_error(n_prompt: int, n_new: int, limit: int | None) -> str:
    """The row's `context` error when its prompt plus caption would not fit the model, else ""."""
    if not limit or n_prompt + n_new <= limit:
        return ""
    return format_error(
        CONTEXT,
        f"the prompt is {n_prompt} tokens and {n_new} new ones would exceed the model's "
        f"{limit} positions; use fewer frames, --resize, or a shorter prompt",
    )


def seq_keys(item: dict) -> list[str]:
    """Keys of one clip's model inputs that run along its token sequence (input_ids, attention_mask, token
    type ids...): what padding extends and what dropping a shared prefix cuts."""
    length = item["input_ids"].shape[-1]
    return [k for k, v in item.items() if _is_seq(k, v, length)]


def _is_seq(key: str, value, length: int) -> bool:
    named = key.endswith(("_ids", "_mask")) and "grid" not in key
    return named and hasattr(value, "dim") and value.dim() == 2 and value.shape[1] == length


def to_device(value, device, dtype):
    """A model input on the device: floating tensors in the model's dtype, the rest as they are."""
    if not hasattr(value, "is_floating_point"):
        return value
    if value.is_floating_point():
        return value.to(device=device, dtype=dtype, non_blocking=True)
    return value.to(device, non_blocking=True)


def cache_kwarg(module) -> str:
    """transformers renamed `past_key_values` to `cache` (5.2x); take whichever this version's forward has."""
    params = inspect.signature(module.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def common_prefix(ids_lists: list[list[int]], stop_ids: set[int]) -> list[int]:
    """The longest common token prefix of the prompts, cut before the first visual placeholder."""
    first = ids_lists[0]
    n = len(first)
    for ids in ids_lists[1:]:
        n = min(n, len(ids))
        n = next((i for i in range(n) if ids[i] != first[i]), n)
    cut = next((i for i, t in enumerate(first[:n]) if t in stop_ids), n)
    return first[:cut]


def placeholder_ids(config) -> set[int]:
    """Token ids that stand for visual inputs in this model's prompts (images, videos, their delimiters)."""
    ids = set()
    for name in ("image_token_index", "image_token_id", "video_token_index", "video_token_id", "vision_start_token_id"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            ids.add(value)
    return ids
