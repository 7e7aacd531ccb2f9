"""GPU facts for the bench: busy fraction sampled while the run goes, peak rates measured on the card."""

from __future__ import annotations

import threading
import time


class BusyMonitor:
    """Samples the GPU's utilisation (NVML: share of time a kernel was running) every `interval` s."""

    def __init__(self, device_index: int = 0, interval: float = 0.1):
        self.index, self.interval = device_index, interval
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = None

    def __enter__(self):
        try:
            import pynvml

            pynvml.nvmlInit()
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(self.index)
            self._nvml = pynvml
        except Exception:
            self._nvml = None
            return self
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            try:
                self.samples.append(self._nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu)
            except Exception:
                pass
            time.sleep(self.interval)

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread:
            self._thread.join()

    @property
    def busy(self) -> float | None:
        return sum(self.samples) / (100.0 * len(self.samples)) if self.samples else None


def measure_peaks(device: str = "cuda") -> dict:
    """The card's bf16 matrix rate and memory bandwidth as measured now (datasheet figures are leads only)."""
    import torch

    n = 8192
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(10):
        a @ b
    end.record()
    torch.cuda.synchronize()
    flops = 2 * n**3 * 10 / (start.elapsed_time(end) / 1e3)
    x = torch.empty(1 << 30, dtype=torch.uint8, device=device)
    y = torch.empty_like(x)
    y.copy_(x)
    torch.cuda.synchronize()
    start.record()
    for _ in range(10):
        y.copy_(x)
    end.record()
    torch.cuda.synchronize()
    bw = 2 * x.numel() * 10 / (start.elapsed_time(end) / 1e3)
    del a, b, x, y
    torch.cuda.empty_cache()
    return {"bf16_flops": flops, "bytes_per_s": bw, "name": torch.cuda.get_device_name()}


def roofline_seconds(
    n_videos: int,
    lm_params: float,
    vision_params: float,
    prompt_tokens: float,
    new_tokens: int,
    vision_tokens: float,
    batch: int,
    kv_bytes_per_token: float,
    peaks: dict,
) -> dict:
    """A floor for the run, phase by phase (they do not overlap on one GPU).

    Prefill + vision: compute-bound, 2 FLOPs per parameter per token (LM) and per patch (vision tower).
    Decode: each step reads the LM weights once for the whole batch (bf16) plus every sequence's KV
    cache, and does 2 FLOPs per parameter per sequence: the larger of the two times.
    """
    prefill_flops = n_videos * (2 * lm_params * prompt_tokens + 2 * vision_params * vision_tokens)
    steps = (n_videos / max(batch, 1)) * new_tokens
    decode_flops = n_videos * new_tokens * 2 * lm_params
    kv_read = n_videos * new_tokens * (prompt_tokens + new_tokens / 2) * kv_bytes_per_token
    decode_bytes = steps * 2 * lm_params + kv_read
    t_prefill = prefill_flops / peaks["bf16_flops"]
    t_decode = max(decode_flops / peaks["bf16_flops"], decode_bytes / peaks["bytes_per_s"])
    return {
        "flops": prefill_flops + decode_flops,
        "bytes": decode_bytes,
        "t_prefill": t_prefill,
        "t_decode": t_decode,
        "floor_s": t_prefill + t_decode,
    }
