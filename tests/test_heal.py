"""--heal: rows that loop, come back empty, are cut off or echo the prompt are captioned again with decoding
adjusted for that row only; good rows are never touched. Also --retry-failed."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from clirun import vidcap
from hypothesis import given, settings
from hypothesis import strategies as st
from media import make_video

from vidcap.heal import ECHO, HEALABLE, echoes_prompt, heal_rows, reasons_of, schedule

FAULTS = ["fault-loop", "fault-empty", "fault-echo", "fault-trunc"]
STUCK = ["fault-loop-stuck", "fault-empty-stuck"]


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    """Good clips and clips named to fail on purpose (the fake backend reads the name), all different."""
    root = tmp_path_factory.mktemp("heal")
    names = ["good_a", "good_b", "good_c", *FAULTS, *STUCK]
    for i, name in enumerate(names):
        make_video(root / f"{name}.mp4", n_frames=12, size=(96 + 16 * i, 72))
    pd.DataFrame({"path": [f"{n}.mp4" for n in names]}).to_csv(root / "m.csv", index=False)
    return root


def _run(clips: Path, out: str, *args, **env):
    proc = vidcap(
        "caption", clips / "m.csv", "--model", "fake", "--workers", "0", "-q", "-o", clips / out, *args, **env
    )
    return pd.read_csv(clips / out, keep_default_na=False).set_index("path"), proc.stderr


@pytest.mark.parametrize("ledger", [False, True], ids=["small", "streaming-ledger"])
def test_heal_fixes_what_it_can_flags_the_rest_and_never_touches_good_rows(clips, ledger):
    env = {"VIDCAP_STREAM_MIN_BYTES": 0} if ledger else {}
    plain, _ = _run(clips, f"plain{ledger}.csv", **env)
    healed, err = _run(clips, f"healed{ledger}.csv", "--heal", "2", **env)
    good = [p for p in plain.index if p.startswith("good")]
    assert (plain.loc[good, "flags"] == "").all()
    for col in ("text", "flags", "completion_tokens", "finish_reason"):  # good rows: byte for byte the same
        assert (healed.loc[good, col] == plain.loc[good, col]).all(), col
    assert (healed.loc[good, "heal"] == "").all() and (healed.loc[good, "heal_attempts"] == "").all()
    for name in FAULTS:
        row = healed.loc[f"{name}.mp4"]
        assert reasons_of(plain.loc[f"{name}.mp4", "flags"]), name  # the fault shows without --heal
        assert row["heal"] == "healed" and reasons_of(row["flags"]) == set(), name
        tries = json.loads(row["heal_attempts"])
        assert tries[0]["attempt"] == 0 and reasons_of(tries[0]["flags"]) and tries[-1]["flags"] == ""
        assert all("decoding" in t for t in tries[1:])
    assert plain.loc["fault-echo.mp4", "flags"] == ECHO
    assert len(json.loads(healed.loc["fault-empty.mp4", "heal_attempts"])) == 3  # needed the sampling attempt
    for name in STUCK:
        row = healed.loc[f"{name}.mp4"]
        assert row["heal"] == "unhealed" and reasons_of(row["flags"]), name
        assert row["text"] == plain.loc[f"{name}.mp4", "text"]  # nothing better came back: the original stays
        assert len(json.loads(row["heal_attempts"])) == 3  # the first try and two attempts, each with its flags
    assert "heal: healed 4, unhealed 2" in err


@pytest.mark.parametrize("ledger", [False, True], ids=["small", "streaming-ledger"])
def test_retry_failed_redoes_every_failed_row_and_keeps_the_rest(clips, tmp_path, ledger):
    env = {"VIDCAP_STREAM_MIN_BYTES": 0} if ledger else {}
    man = tmp_path / "m.csv"
    rows = pd.read_csv(clips / "m.csv")
    rows["path"] = [str(clips / p) for p in rows["path"]]
    missing = tmp_path / "later.mp4"
    pd.concat([rows.head(3), pd.DataFrame({"path": [str(missing)]})]).to_csv(man, index=False)
    out = tmp_path / "o.parquet"
    vidcap("caption", man, "--model", "fake", "--workers", "0", "-q", "-o", out, **env)
    first = pd.read_parquet(out)
    assert first["status"].tolist().count("failed") == 1 and "missing" in first["error"].iloc[3]
    make_video(missing, n_frames=12)  # the file arrives; a plain rerun does not redo a `missing` row
    vidcap("caption", man, "--model", "fake", "--workers", "0", "-q", "-o", out, **env)
    assert pd.read_parquet(out)["status"].tolist().count("failed") == 1
    vidcap("caption", man, "--model", "fake", "--workers", "0", "-q", "-o", out, "--retry-failed", **env)
    again = pd.read_parquet(out)
    assert (again["status"] == "ok").all()
    pd.testing.assert_frame_equal(again.head(3)[["path", "text"]], first.head(3)[["path", "text"]])


def test_echo_detection():
    prompt = (
        "Describe this video and its style in a very detailed manner. Pay attention to all objects in the "
        "video. The description should be useful for AI to re-generate the video."
    )
    assert echoes_prompt(prompt, prompt)
    assert echoes_prompt("Pay attention to all objects in the video. The description should be useful for AI", prompt)
    assert not echoes_prompt("A red car drives along a coastal road at sunset while waves break below.", prompt)
    assert not echoes_prompt("The video shows a dog.", prompt)  # shares words, not the instructions
    assert not echoes_prompt("anything", None)


def test_schedule_escalates_and_is_deterministic():
    first, second = schedule(1, {"repetition"}, 256), schedule(2, {"repetition"}, 256)
    assert first.repetition_penalty > 1 and first.no_repeat_ngram_size and not first.samples
    assert second.samples and second.seed is not None and second == schedule(2, {"repetition"}, 256)
    assert schedule(1, {"truncated"}, 100).max_new_tokens > 100  # cut off honestly: room to finish
    assert schedule(1, {"truncated", "repetition"}, 100).max_new_tokens is None  # a loop gets no more room


class _Recorder:
    """A backend stand-in: records every heal call and answers from a script."""

    def __init__(self, answer):
        from vidcap.backends.base import CaptionOptions

        self.options, self.calls, self.answer = CaptionOptions(), [], answer

    def heal_caption(self, requests, decoding):
        self.calls.append((list(requests), decoding))
        return [self.answer(r, decoding) for r in requests]


_FLAG_SETS = st.lists(
    st.sampled_from(["", "boilerplate", "duplicate", "repetition", "empty", "truncated", ECHO]), max_size=3
).map(lambda fs: ",".join(sorted({f for f in fs if f})))


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(st.tuples(st.text(max_size=30), _FLAG_SETS), min_size=1, max_size=8), attempts=st.integers(0, 3))
def test_heal_rows_never_changes_a_row_that_needs_nothing(rows, attempts):
    from vidcap.backends.base import CaptionResult

    out_rows = [{"text": t, "flags": f, "error": ""} for t, f in rows]
    backend = _Recorder(lambda req, dec: CaptionResult(text="healed text."))
    reqs = [object() for _ in out_rows]
    got = heal_rows(out_rows, reqs, backend, attempts, lambda res, req: {"text": res.text, "flags": "", "error": ""})
    for before, after in zip(out_rows, got, strict=False):
        if not set(before["flags"].split(",")) & HEALABLE:
            assert after is before  # untouched: the very same row
        elif attempts:
            assert after["text"] == "healed text." and after["heal"] == "healed"
        else:
            assert after is before
    asked = [r for reqs_, _ in backend.calls for r in reqs_]
    assert len(asked) == len(set(map(id, asked)))  # each flagged row asked once: healed on attempt 1


def test_tiny_model_gets_the_per_row_decoding(tiny_model, tmp_path, monkeypatch):
    """The heal decoding reaches generate() (repetition penalty, no-repeat n-grams, seeded sampling) for
    the healed rows only; the run's own captions keep the run's decoding."""
    import transformers.generation.utils as gen

    seen = []
    real = gen.GenerationMixin.generate

    def spy(self, *args, **kwargs):
        cfg = kwargs.get("generation_config")
        seen.append((cfg.repetition_penalty, cfg.no_repeat_ngram_size, cfg.do_sample, cfg.max_new_tokens))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(gen.GenerationMixin, "generate", spy)
    from vidcap.backends.base import CaptionOptions, CaptionRequest
    from vidcap.backends.registry import resolve_model
    from vidcap.stages.caption import CaptionStage

    model = tiny_model("qwen2-vl")
    stage = CaptionStage(
        resolve_model(str(model), None),
        CaptionOptions(heal=2, max_new_tokens=12, device="cpu", num_frames=2, engine=False),
    )
    stage.setup("cpu")
    try:
        import numpy as np

        frames = np.random.default_rng(0).integers(0, 255, (2, 64, 64, 3), dtype=np.uint8)
        req = CaptionRequest(frames, "Describe the video.")
        base = stage.backend.caption([req])[0]
        again = [stage.backend.heal_caption([req], schedule(2, {"repetition"}, 12))[0].text for _ in range(2)]
        stage.backend.heal_caption([req], schedule(1, {"repetition"}, 12))
    finally:
        stage.teardown()
    assert seen[0][:2] in ((None, None), (1.0, 0), (1.0, None))  # the run's decoding: no penalty
    assert seen[1][0] == 1.15 and seen[1][1] == 4 and seen[1][2] is True  # attempt 2: seeded sampling
    assert again[0] == again[1]  # the seed makes the sampled caption repeatable
    assert seen[3][0] == 1.3 and seen[3][1] == 4 and seen[3][2] is False  # attempt 1: greedy, no repeats
    assert base.text is not None


def test_report_shows_healed_rows_before_and_after(clips):
    _run(clips, "healed.csv", "--heal", "2")
    vidcap("report", clips / "healed.csv", "-o", clips / "r.html", "--sample", "0")
    html = (clips / "r.html").read_text()
    assert "Healed captions: 4 healed, 2 still flagged" in html
    assert "fault-loop-stuck.mp4" in html and "the car drives past the house" in html  # the looping "before"
