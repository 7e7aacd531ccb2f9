"""Prompt tables: the seed's caption prompts (`caption`) and the tagging prompts."""

from .caption import PROMPTS, PromptSpec, custom_prompt, get_prompt, render

__all__ = ["PROMPTS", "PromptSpec", "custom_prompt", "get_prompt", "render"]
