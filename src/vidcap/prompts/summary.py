"""The whole-video summary prompt: window (or scene) captions with their times -> one paragraph."""

from __future__ import annotations

from dataclasses import dataclass

SUMMARY_SYSTEM = (
    "You summarise videos. You are given captions of consecutive parts of one video, each with its start and end "
    "time. Write one paragraph (at most 120 words) that describes the whole video in order: the main subjects, "
    "what happens, where it takes place and how it changes over time, and the camera work where the captions say. "
    "Do not mention the captions, the parts or the timestamps; write about the video itself."
)


@dataclass(frozen=True)
class SummaryPrompt:
    """The chat for one video: the system prompt, then its timeline as the user turn."""

    system: str = SUMMARY_SYSTEM
    source: str = "builtin"

    def messages(self, timeline: str) -> list[dict]:
        return [{"role": "system", "content": self.system}, {"role": "user", "content": timeline}]

    def fingerprint(self) -> dict:
        return {"system": self.system}
