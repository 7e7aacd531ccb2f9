"""The seed's caption prompt table, byte-exact (Open-Sora tools/caption), and how a row fills it.

`{}` in a `-text` prompt takes the row's existing `text` (the seed's `query.format(row["text"])`), so a
user can re-caption with old captions as a hint. `pllava*` prompts are the system text of PLLaVA's
conversation; the PLLaVA backend adds the user turn `PLLAVA_USER_QUERY` itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import EMPTY_TEXT, UsageError, VidcapError

PLLAVA_USER_QUERY = "Describe the video in details."
# PLLaVA's own conversation system text (its repo's conv templates): the system for vidcap's question prompts
PLLAVA_SYSTEM = (
    "You are Pllava, a large vision-language assistant. You are able to understand the video content that the "
    "user provides, and assist the user with a variety of tasks using natural language. Follow the instructions "
    "carefully and explain your answers in detail based on the provided video."
)
GPT4V_DEFAULT = "video-f3-detail-3ex"  # caption_gpt4.py's --prompt default
LLAVA_DEFAULT = "video-f1-detail-3ex"  # caption_llava.py's --prompt default (1 middle frame)

# name -> (type, text). Strings are joined from pieces only to keep lines short; tests pin their hashes.
PROMPTS: dict[str, tuple[str, str]] = {
    # seed v1.2 tools/caption/utils.py PROMPTS
    "image": (
        "image",
        "Describe this image and its style to generate a succinct yet informative description. Pay "
        "attention to all objects in the image. The description should be useful for AI to "
        "re-generate the image. The description should be no more than five sentences. Remember do "
        "not exceed 5 sentences.",
    ),
    # seed v1.2 tools/caption/utils.py PROMPTS
    "image-text": (
        "image",
        "Describe this image and its style in a very detailed manner. Pay attention to all objects "
        "in the image. The description should be useful for AI to re-generate the image. The "
        "description should be no more than six sentences. Some information about the image is '{}'.",
    ),
    # seed v1.2 tools/caption/utils.py PROMPTS
    "image-3ex": (
        "image",
        "An image is given. Describe this image and its style to generate a succinct yet informative "
        "description. Pay attention to all objects in the image. The description should be useful "
        "for AI to re-generate the video. The description should be no more than five sentences. "
        "Here are some examples of good descriptions: 1. A stylish woman walks down a Tokyo street "
        "filled with warm glowing neon and animated city signage. She wears a black leather jacket, "
        "a long red dress, and black boots, and carries a black purse. She wears sunglasses and red "
        "lipstick and walks confidently and casually. The street is damp and reflective, creating a "
        "mirror effect of the colorful lights. Many pedestrians walk about. 2. Several giant wooly "
        "mammoths approach treading through a snowy meadow, their long wooly fur lightly blows in "
        "the wind as they walk, snow covered trees and dramatic snow capped mountains in the "
        "distance, mid afternoon light with wispy clouds and a sun high in the distance creates a "
        "warm glow, the low camera view is stunning capturing the large furry mammal with beautiful "
        "photography, depth of field. 3. Drone view of waves crashing against the rugged cliffs "
        "along Big Sur's garay point beach. The crashing blue waters create white-tipped waves, "
        "while the golden light of the setting sun illuminates the rocky shore. A small island with "
        "a lighthouse sits in the distance, and green shrubbery covers the cliff's edge. The steep "
        "drop from the road down to the beach is a dramatic feat, with the cliff’s edges jutting out "
        "over the sea. This is a view that captures the raw beauty of the coast and the rugged "
        "landscape of the Pacific Coast Highway.",
    ),
    # seed v1.2 tools/caption/utils.py PROMPTS
    "video": (
        "video",
        "Describe this video and its style in a very detailed manner. Pay attention to all objects "
        "in the video. The description should be useful for AI to re-generate the video. The "
        "description should be no more than six sentences.",
    ),
    # seed v1.2 tools/caption/utils.py PROMPTS
    "video-text": (
        "video",
        "Describe this video and its style in a very detailed manner. Some information about the "
        "image is '{}'. Pay attention to all objects in the video. The description should be useful "
        "for AI to re-generate the video. The description should be no more than six sentences.",
    ),
    # seed v1.2 tools/caption/utils.py PROMPTS
    "video-f1-detail-3ex": (
        "video",
        "A video is given by providing the middle frame. Describe this video and its style to "
        "generate a description. Pay attention to all objects in the video. The description should "
        "be useful for AI to re-generate the video. The description should be no more than six "
        "sentences. Here are some examples of good descriptions: 1. A stylish woman walks down a "
        "Tokyo street filled with warm glowing neon and animated city signage. She wears a black "
        "leather jacket, a long red dress, and black boots, and carries a black purse. She wears "
        "sunglasses and red lipstick. She walks confidently and casually. The street is damp and "
        "reflective, creating a mirror effect of the colorful lights. Many pedestrians walk about. "
        "2. Several giant wooly mammoths approach treading through a snowy meadow, their long wooly "
        "fur lightly blows in the wind as they walk, snow covered trees and dramatic snow capped "
        "mountains in the distance, mid afternoon light with wispy clouds and a sun high in the "
        "distance creates a warm glow, the low camera view is stunning capturing the large furry "
        "mammal with beautiful photography, depth of field. 3. Drone view of waves crashing against "
        "the rugged cliffs along Big Sur's garay point beach. The crashing blue waters create "
        "white-tipped waves, while the golden light of the setting sun illuminates the rocky shore. "
        "A small island with a lighthouse sits in the distance, and green shrubbery covers the "
        "cliff's edge. The steep drop from the road down to the beach is a dramatic feat, with the "
        "cliff’s edges jutting out over the sea. This is a view that captures the raw beauty of the "
        "coast and the rugged landscape of the Pacific Coast Highway.",
    ),
    # seed v1.2 tools/caption/utils.py PROMPTS
    "video-f1-detail-2ex-text": (
        "video",
        "A video is given by providing the middle frame. Some information about the image is '{}'. "
        "Describe this video and its style to generate a description. Pay attention to all objects "
        "in the video. Do not describe each frame individually. Do not reply with words like 'first "
        "frame'. The description should be useful for AI to re-generate the video. The description "
        "should be no more than six sentences. Here are some examples of good descriptions: 1. A "
        "stylish woman walks down a Tokyo street filled with warm glowing neon and animated city "
        "signage. She wears a black leather jacket, a long red dress, and black boots, and carries a "
        "black purse. She wears sunglasses and red lipstick. She walks confidently and casually. The "
        "street is damp and reflective, creating a mirror effect of the colorful lights. Many "
        "pedestrians walk about. 2. Several giant wooly mammoths approach treading through a snowy "
        "meadow, their long wooly fur lightly blows in the wind as they walk, snow covered trees and "
        "dramatic snow capped mountains in the distance, mid afternoon light with wispy clouds and a "
        "sun high in the distance creates a warm glow, the low camera view is stunning capturing the "
        "large furry mammal with beautiful photography, depth of field.",
    ),
    # seed v1.2 tools/caption/utils.py PROMPTS
    "video-f3-detail-3ex": (
        "video",
        "A video is given by providing three frames in chronological order. Describe this video and "
        "its style to generate a description. Pay attention to all objects in the video. Do not "
        "describe each frame individually. Do not reply with words like 'first frame'. The "
        "description should be useful for AI to re-generate the video. The description should be no "
        "more than six sentences. Here are some examples of good descriptions: 1. A stylish woman "
        "walks down a Tokyo street filled with warm glowing neon and animated city signage. She "
        "wears a black leather jacket, a long red dress, and black boots, and carries a black purse. "
        "She wears sunglasses and red lipstick. She walks confidently and casually. The street is "
        "damp and reflective, creating a mirror effect of the colorful lights. Many pedestrians walk "
        "about. 2. Several giant wooly mammoths approach treading through a snowy meadow, their long "
        "wooly fur lightly blows in the wind as they walk, snow covered trees and dramatic snow "
        "capped mountains in the distance, mid afternoon light with wispy clouds and a sun high in "
        "the distance creates a warm glow, the low camera view is stunning capturing the large furry "
        "mammal with beautiful photography, depth of field. 3. Drone view of waves crashing against "
        "the rugged cliffs along Big Sur's garay point beach. The crashing blue waters create "
        "white-tipped waves, while the golden light of the setting sun illuminates the rocky shore. "
        "A small island with a lighthouse sits in the distance, and green shrubbery covers the "
        "cliff's edge. The steep drop from the road down to the beach is a dramatic feat, with the "
        "cliff’s edges jutting out over the sea. This is a view that captures the raw beauty of the "
        "coast and the rugged landscape of the Pacific Coast Highway.",
    ),
    # seed v1.2 tools/caption/utils.py PROMPTS
    "video-f3-detail-2ex-text": (
        "video",
        "A video is given by providing three frames in chronological order. Some information about "
        "the image is '{}'. Describe this video and its style to generate a description. Pay "
        "attention to all objects in the video. Do not describe each frame individually. Do not "
        "reply with words like 'first frame'. The description should be useful for AI to re-generate "
        "the video. The description should be no more than six sentences. Here are some examples of "
        "good descriptions: 1. A stylish woman walks down a Tokyo street filled with warm glowing "
        "neon and animated city signage. She wears a black leather jacket, a long red dress, and "
        "black boots, and carries a black purse. She wears sunglasses and red lipstick. She walks "
        "confidently and casually. The street is damp and reflective, creating a mirror effect of "
        "the colorful lights. Many pedestrians walk about. 2. Several giant wooly mammoths approach "
        "treading through a snowy meadow, their long wooly fur lightly blows in the wind as they "
        "walk, snow covered trees and dramatic snow capped mountains in the distance, mid afternoon "
        "light with wispy clouds and a sun high in the distance creates a warm glow, the low camera "
        "view is stunning capturing the large furry mammal with beautiful photography, depth of "
        "field.",
    ),
    # seed v1.3 PROMPTS (crafted by gpt-4o)
    "video-template": (
        "video",
        "Frames of a video clip are given. Write a concise yet detailed paragraph, following this "
        "sequence: 1. Subject: Describe the main subject in detail, including their appearance and "
        "what they are doing. 2. Subject Movement: Provide a detailed account of the subject’s "
        "movements or actions. 3. Scene Description: Describe the environment, setting, or location "
        "in as much detail as possible. 4. Atmosphere: Briefly describe the overall mood (e.g., "
        "lively, calm, cinematic). 5. Light and Shadow: Provide a brief description of the lighting "
        "(e.g., natural, artificial, morning light, sunset). 6. Camera Technique: Mention the camera "
        "angles and shots (e.g., close-up, wide shot) briefly.\nStart directly with descriptions, "
        "avoiding phrases like ‘the video’ or ‘the subject.’ Focus on providing detailed information "
        "for the first three points, while keeping the last three points more concise. Avoid any "
        "guesses or assumptions (e.g., avoid words like ‘possibly’ or ‘suggest’). Ensure the "
        "description is clear and based on observable details for a video-generation model to "
        "recreate the scene.",
    ),
    # seed v1.3 PROMPTS: rewrite an existing caption (text only)
    "video-captrans-template": (
        "video",
        "A paragraph description of a video clip is given. Rewrite the description in a concise yet "
        "detailed manner, following this sequence: 1. Subject: Clearly describe the main subject, "
        "including their appearance and what they are doing. 2. Subject Movement: Provide a detailed "
        "account of the subject’s movements or actions. 3. Scene Description: Describe the "
        "environment or setting as thoroughly as possible. 4. Atmosphere: Briefly summarize the "
        "overall mood (e.g., lively, calm, cinematic). 5. Light and Shadow: Provide a brief note on "
        "the lighting (e.g., natural, artificial, morning light, sunset). 6. Camera Technique: "
        "Mention the camera angles and shots (e.g., close-up, wide shot) briefly.\nEnsure that the "
        "rewritten description only includes visible elements from the original paragraph and does "
        "not add any new details that were not mentioned. Keep the descriptions of the last three "
        "points simple. Avoid any guesses or assumptions (e.g., words like ‘possibly’ or ‘suggest’).",
    ),
    # seed v1.2 caption_pllava.py SYSTEM (PLLaVA conversation system text)
    "pllava": (
        "video",
        "Describe this video. Pay attention to all objects in the video. The description should be "
        "useful for AI to re-generate the video. The description should be no more than six "
        "sentences. Here are some examples of good descriptions: 1. A stylish woman walks down a "
        "Tokyo street filled with warm glowing neon and animated city signage. She wears a black "
        "leather jacket, a long red dress, and black boots, and carries a black purse. She wears "
        "sunglasses and red lipstick. She walks confidently and casually. The street is damp and "
        "reflective, creating a mirror effect of the colorful lights. Many pedestrians walk about. "
        "2. Several giant wooly mammoths approach treading through a snowy meadow, their long wooly "
        "fur lightly blows in the wind as they walk, snow covered trees and dramatic snow capped "
        "mountains in the distance, mid afternoon light with wispy clouds and a sun high in the "
        "distance creates a warm glow, the low camera view is stunning capturing the large furry "
        "mammal with beautiful photography, depth of field. 3. Drone view of waves crashing against "
        "the rugged cliffs along Big Sur's garay point beach. The crashing blue waters create "
        "white-tipped waves, while the golden light of the setting sun illuminates the rocky shore. "
        "A small island with a lighthouse sits in the distance, and green shrubbery covers the "
        "cliff's edge. The steep drop from the road down to the beach is a dramatic feat, with the "
        "cliff’s edges jutting out over the sea. This is a view that captures the raw beauty of the "
        "coast and the rugged landscape of the Pacific Coast Highway.",
    ),
    # seed v1.3 caption_pllava.py `general` short (128 new tokens there)
    "pllava-short": (
        "video",
        "Describe the video focusing on key objects and actions. The description should be brief yet "
        "detailed enough for AI to recreate the video. Keep the description to no more than three "
        "sentences. Here are some examples of good descriptions: 1. A stylish woman walks "
        "confidently down a neon-lit Tokyo street, wearing a black leather jacket and a long red "
        "dress, with pedestrians and reflective wet pavement around her. 2. Giant wooly mammoths "
        "tread through a snowy meadow, their fur blowing lightly in the wind, with snowy trees and "
        "mountains in the background. 3. A drone captures waves crashing against rugged cliffs along "
        "Big Sur, with golden sunset light illuminating the rocky shore and a lighthouse in the "
        "distance.",
    ),
    # seed v1.3 caption_pllava.py `person` long
    "pllava-person": (
        "video",
        "Describe this video in detail. Pay special attention to all details of the person, "
        "including 1. apperance, such as hair, face, body, and outfit; 2. expression and emotion; 3. "
        "action and pose. Also pay attention to the background and the surrounding environment. Also "
        "pay attention to the camera angle. The description should be useful for AI to re-generate "
        "the video. The description should contain no more than six sentences.",
    ),
    # seed v1.3 caption_pllava.py `person` short (128 new tokens there)
    "pllava-person-short": (
        "video",
        "Describe this video in detail. Pay special attention to key details of the person, "
        "including 1. apperance, such as hair, face, body, and outfit; 2. expression and emotion; 3. "
        "action and pose. Also pay attention to the background and the surrounding environment. Also "
        "pay attention to the camera angle. The description should be useful for AI to re-generate "
        "the video. The description should contain no more than three sentences.",
    ),
}


@dataclass(frozen=True)
class PromptSpec:
    name: str
    text: str
    type: str  # "image" or "video": what the seed wrote the prompt for
    needs_text: bool  # has a `{}` the row's existing `text` fills
    user_turn: str = PLLAVA_USER_QUERY  # PLLaVA: the user turn after `<image>` that goes with this prompt
    max_new_tokens: int | None = None  # the seed's token limit for this prompt (None: the run's default)
    question: bool = False  # vidcap's own prompts: asked after the video (PLLaVA: the user turn, not the system text)


# vidcap's own prompts (not the seed's): the caption forms text-to-video training uses beside the long one
# (Step-Video's short and dense captions, Cosmos' short / dense variants); written as a question that
# follows the video, so `--variants` shares everything before it: name -> (type, text, max new tokens).
VIDCAP_PROMPTS: dict[str, tuple[str, str, int]] = {
    "short": (
        "video",
        "Describe this video in one sentence of at most 25 words: the main subject, what it does and where. "
        "Reply with the sentence only.",
        48,
    ),
    "dense": (
        "video",
        "Describe this video in rich detail in one paragraph: the main subjects and their appearance, their "
        "actions and movements over time, the setting and background, the lighting, colours and atmosphere, "
        "and the shot type, camera angle and camera motion. Describe only what is visible.",
        384,
    ),
}


# Open-Sora v1.3's caption_pllava.py templates carry their own user turn and token limit (v1.2's `pllava`
# keeps "Describe the video in details." and 256): (user turn, max new tokens).
PLLAVA_V13 = {
    "pllava-short": ("Describe the video in detail.", 128),
    "pllava-person": ("Describe the video in detail.", 256),
    "pllava-person-short": ("Describe the video in detail.", 128),
}


def prompt_names() -> list[str]:
    """Every prompt name: the seed's table, then vidcap's own."""
    return [*PROMPTS, *VIDCAP_PROMPTS]


def get_prompt(name: str) -> PromptSpec:
    if name in VIDCAP_PROMPTS:
        kind, text, own = VIDCAP_PROMPTS[name]
        return PromptSpec(name, text, kind, "{}" in text, PLLAVA_USER_QUERY, own, question=True)
    if name not in PROMPTS:
        raise UsageError(f"unknown prompt '{name}'; known prompts: {', '.join(prompt_names())}.")
    kind, text = PROMPTS[name]
    turn, limit = PLLAVA_V13.get(name, (PLLAVA_USER_QUERY, 256 if name == "pllava" else None))
    return PromptSpec(name, text, kind, "{}" in text, turn, limit)


def custom_prompt(text: str, kind: str = "video", name: str = "custom") -> PromptSpec:
    """A prompt from --prompt-file; a `{}` in it takes the row's `text` like the seed's `-text` ones."""
    text = text.strip()
    if not text:
        raise UsageError("the prompt file is empty; write the instruction the model should follow into it.")
    return PromptSpec(name, text, kind, "{}" in text)


def render(spec: PromptSpec, row_text=None) -> str:
    """The prompt for one row; raises VidcapError(empty_text) when a `-text` prompt has no text."""
    if not spec.needs_text:
        return spec.text
    if row_text is None or (isinstance(row_text, float) and row_text != row_text) or not str(row_text).strip():
        raise VidcapError(EMPTY_TEXT, f"prompt '{spec.name}' needs the row's text column, which is empty")
    return spec.text.replace("{}", str(row_text).strip())
