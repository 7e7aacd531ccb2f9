"""The run's settings: one frozen RunConfig (run, execution, tuning) built once, recorded in run.json; and
--batch-size, which means one thing (rows the model works on at once) with one default policy."""

from __future__ import annotations

import dataclasses
import json
import pickle

import pytest
from clirun import vidcap

from vidcap.config import Execution, RunConfig, RunScope, Tuning, default_batch_size
from vidcap.errors import UsageError


def test_a_run_config_cannot_be_changed_once_built():
    cfg = RunConfig(workers=0, limit=5, part_rows=10)
    for target, name in ((cfg, "workers"), (cfg, "run"), (cfg.execution, "workers"), (cfg.run, "limit")):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(target, name, 3)
    assert (cfg.workers, cfg.limit, cfg.part_rows) == (0, 5, 10)


def test_settings_by_name_and_by_group_are_the_same_config():
    flat = RunConfig(workers=2, device="cpu", limit=3, shard=(0, 2), batch_wait=5.0, progress=False)
    grouped = RunConfig(
        RunScope(limit=3, shard=(0, 2)), Execution(workers=2, device="cpu", progress=False), Tuning(batch_wait=5.0)
    )
    assert flat == grouped and hash(flat) == hash(grouped)
    assert pickle.loads(pickle.dumps(flat)) == flat  # GPU workers get it through a pipe
    changed = dataclasses.replace(flat, workers=0, part_seconds=1.0)  # a changed copy; the original stays
    assert (changed.workers, changed.part_seconds, changed.limit) == (0, 1.0, 3) and flat.workers == 2


def test_an_unknown_setting_is_one_sentence():
    with pytest.raises(UsageError, match=r"^unknown run setting 'worker'; known settings: .*workers\.$"):
        RunConfig(worker=2)


def test_the_record_groups_every_setting():
    rec = RunConfig(workers=1, gpus="cpu:2", part_rows=7).record()
    assert set(rec) == {"run", "execution", "tuning"}
    assert rec["execution"]["workers"] == 1 and rec["execution"]["gpus"] == "cpu:2"
    assert rec["tuning"]["part_rows"] == 7 and rec["run"]["check_files"] is True
    assert json.loads(json.dumps(rec))["execution"]["ray_env"] == []


def test_the_cli_records_its_config_in_run_json(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("path\na.mp4\nb.mp4\nc.mp4\n")
    out = tmp_path / "out.csv"
    args = ("caption", manifest, "--model", "fake", "-o", out, "--workers", "0", "-q", "--keep-parts")
    vidcap(*args, "--limit", "2", "--part-rows", "5", check=False)
    started = json.loads((tmp_path / "out.csv.parts" / "run.json").read_text())["provenance"]["config"]
    finished = json.loads((tmp_path / "out.csv.run.json").read_text())["summary"]["config"]
    assert started == finished
    assert finished["run"]["limit"] == 2 and finished["run"]["keep_parts"] is True
    assert finished["execution"]["workers"] == 0 and finished["execution"]["executor"] == "local"
    assert finished["tuning"]["part_rows"] == 5


def test_batch_size_has_one_meaning_and_one_default_policy():
    assert default_batch_size("openai", None, 8) == 32  # API: 4 requests per connection
    assert default_batch_size("fake", None, 8) == default_batch_size("hf-pllava", "cpu", 8) == 8
    assert default_batch_size("hf", "cpu", 8) == 8  # tag and summarize's in-process chat models too
    import typer

    from vidcap.cli import app

    root = typer.main.get_command(app)
    helps = {}
    for name in ("caption", "tag", "summarize"):
        (param,) = [p for p in root.commands[name].params if "--batch-size" in p.opts]
        helps[name] = (param.help, param.default)
    assert len(set(helps.values())) == 1, helps  # the same words and the same default everywhere
    text, default = helps["caption"]
    assert text.startswith("Rows the model works on at once") and default is None


def test_tag_batch_size_follows_the_policy_without_touching_the_given_options():
    from vidcap.backends.base import CaptionOptions
    from vidcap.stages.tag import build_tag_stage

    opts = CaptionOptions(device="cpu")
    stage = build_tag_stage("objects", backend="fake", options=opts)
    assert stage.batch_size == 8 and opts.batch_size == CaptionOptions().batch_size
    assert build_tag_stage("objects", backend="fake", batch_size=3, options=opts).batch_size == 3


def test_a_flag_shared_by_commands_says_the_same_everywhere():
    import typer

    from vidcap.cli import app

    root = typer.main.get_command(app)
    seen: dict = {}
    for name in ("caption", "tag", "summarize", "motion", "scenes"):
        for param in root.commands[name].params:
            for flag in param.opts:
                seen.setdefault(flag, set()).add((param.help, repr(param.default)))
    shared = ["--batch-size", "--concurrency", "--max-retries", "--timeout", "--api-key-env", "--price-in"]
    shared += ["--price-out", "--dtype", "--trust-remote-code", "--limit", "--shard", "--overwrite", "--quiet"]
    assert {flag: seen[flag] for flag in shared if len(seen[flag]) > 1} == {}


def test_every_setting_reads_by_name():
    from vidcap.config import FLAT

    cfg = RunConfig(RunScope(limit=1, shard=(1, 3)), Execution(workers=2, gpus="cpu:2"), Tuning(batch_wait=0.5))
    assert {name: getattr(cfg, name) for name in FLAT} == {
        name: getattr(getattr(cfg, group), name) for name, group in FLAT.items()
    }
