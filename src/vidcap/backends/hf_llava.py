"""LLaVA-1.6 (llava-hf/llava-v1.6-* checkpoints), the seed's v1.0/v1.1 captioner: the K frames go in as K
separate images (anyres tiling by the processor), in the checkpoint's own chat template with the assistant
turn opened. The seed rendered ChatML for every model and never opened the assistant turn; we do neither."""

from __future__ import annotations

from .hf_vlm import HFVLMBackend


class LlavaNextBackend(HFVLMBackend):
    name = "hf-llava"
    frames_as_images = True

    def fallback_prompt(self, prompt: str, n_images: int) -> str:
        # Older llava-hf uploads have no chat template; this is the Vicuna layout they were trained with.
        image_token = getattr(self.processor, "image_token", "<image>")
        return "USER: " + f"{image_token}\n" * n_images + prompt + " ASSISTANT:"
