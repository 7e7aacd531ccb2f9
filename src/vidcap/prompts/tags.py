"""Tagging prompts: the seed's Llama-3 system prompts for `objects` and `actions`, plus custom keys."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError

# Exact strings from the seed's caption_llama3.py (IMPLEMENTATION-NOTES section 5), trailing space kept.
TAG_PROMPTS: dict[str, str] = {
    "objects": (
        "You are a AI assistant to extract objects from user's text. For example: user: 'In this video a dog "
        "is running around. In addition, a person is laughing at the dog.', you produce a list of objects "
        "separated by ',' and wrapped by '[' and ']': '[dog, person]' "
    ),
    "actions": (
        "You are a AI assistant to extract actions from user's text. For example: user: 'In this video a dog "
        "is running around. In addition, a person is laughing at the dog.', you produce a list of actions "
        "separated by ',' and wrapped by '[' and ']': '[run, laugh]' "
    ),
}

# Columns a tag key must not overwrite: the manifest's own and the ones every run adds.
RESERVED = frozenset({"path", "text", "status", "error", "id", "index"})
_KEY_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")


@dataclass(frozen=True)
class TagPrompt:
    """How one caption becomes a chat: `system` + the caption, or a user `template` with `{}`."""

    key: str
    system: str | None
    template: str = "{}"
    source: str = "builtin"  # "builtin" or the prompt file's path

    def messages(self, caption: str) -> list[dict]:
        user = self.template.replace("{}", caption) if "{}" in self.template else caption
        msgs = [{"role": "system", "content": self.system}] if self.system else []
        return msgs + [{"role": "user", "content": user}]

    def fingerprint(self) -> dict:
        return {"key": self.key, "system": self.system, "template": self.template}


def check_key(key: str) -> str:
    if not isinstance(key, str) or not _KEY_RE.match(key):
        raise UsageError(
            f"tag key '{key}' is not a usable column name; use letters, digits and underscores, starting with a letter."
        )
    if key.lower() in RESERVED or key.startswith("_"):
        raise UsageError(f"tag key '{key}' would overwrite the '{key}' column; pick another name such as '{key}_tags'.")
    return key


def read_prompt_file(path: str | Path) -> str:
    p = Path(path).expanduser()
    if not p.is_file():
        raise UsageError(f"prompt file {path} does not exist; pass a text file holding the tagging instruction.")
    try:
        text = p.read_text(encoding="utf-8").strip()
    except UnicodeDecodeError:
        raise UsageError(f"prompt file {path} is not UTF-8 text; re-save it as UTF-8.") from None
    if not text:
        raise UsageError(f"prompt file {path} is empty; write the tagging instruction into it.")
    return text


def tag_prompt(key: str, prompt_text: str | None = None, prompt_file: str | Path | None = None) -> TagPrompt:
    """The built-in prompt for `objects`/`actions`, or a custom one (which any key may use).

    A custom prompt replaces the system prompt, as the seed's `--prompt` did; if it contains `{}`, it is
    instead a user message with the caption put in place of `{}` and no system message (for chat models
    whose template has no system role).
    """
    check_key(key)
    if prompt_file is not None:
        prompt_text = read_prompt_file(prompt_file)
    if prompt_text is not None:
        prompt_text = prompt_text.strip()
        if not prompt_text:
            raise UsageError("the tagging prompt is empty; write the instruction the model should follow.")
        source = str(prompt_file) if prompt_file is not None else "custom"
        if "{}" in prompt_text:
            return TagPrompt(key, None, prompt_text, source)
        return TagPrompt(key, prompt_text, "{}", source)
    if key not in TAG_PROMPTS:
        raise UsageError(
            f"there is no built-in prompt for key '{key}' (built-in: {', '.join(sorted(TAG_PROMPTS))}); "
            "pass --prompt-file with the instruction for a custom key."
        )
    return TagPrompt(key, TAG_PROMPTS[key])
