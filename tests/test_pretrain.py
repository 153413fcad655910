"""Pretraining: the SFT loss by hand, determinism for a seed, caching and train-on-first-use."""

import math

import torch

from lfpo_bench import pretrain as pt
from lfpo_bench.likelihood import masked_diffusion_loss


def test_masked_diffusion_loss_by_hand():
    logits = torch.tensor([[[0.0, 0.0], [math.log(3.0), 0.0], [5.0, 0.0]]])
    targets = torch.tensor([[0, 1, 0]])
    masked = torch.tensor([[True, True, False]])  # the unmasked position does not count
    t = torch.tensor([[0.5]])
    # (ln 2 + ln 4) / 0.5 / (B*L = 3)
    expected = (math.log(2) + math.log(4)) / 0.5 / 3
    assert math.isclose(masked_diffusion_loss(logits, targets, masked, t).item(), expected, rel_tol=1e-6)


def test_pretraining_is_deterministic_for_a_seed(tmp_path):
    cfg = pt.PretrainConfig(task="sudoku4", steps=3, batch_size=8, d_model=16, n_layers=1, n_heads=1)
    pt.pretrain(cfg, tmp_path / "a", show_progress=False)
    pt.pretrain(cfg, tmp_path / "b", show_progress=False)
    other = pt.PretrainConfig(task="sudoku4", steps=3, batch_size=8, d_model=16, n_layers=1, n_heads=1, seed=1)
    pt.pretrain(other, tmp_path / "c", show_progress=False)
    from safetensors.torch import load_file

    a, b, c = (load_file(tmp_path / n / "model.safetensors") for n in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_a_missing_default_model_is_trained_on_first_use_and_then_reused(monkeypatch, tmp_path):
    monkeypatch.setenv("LFPO_BENCH_CACHE", str(tmp_path))
    small = pt.PretrainConfig(task="sudoku4", steps=2, batch_size=4, d_model=16, n_layers=1, n_heads=1)
    monkeypatch.setitem(pt.DEFAULTS, "sudoku4", small)
    calls = []
    real = pt.pretrain
    monkeypatch.setattr(pt, "pretrain", lambda *a, **k: calls.append(1) or real(*a, **k))
    p1 = pt.ensure_tiny("sudoku4", quiet=True)
    p2 = pt.ensure_tiny("sudoku4", quiet=True)
    assert p1 == p2 and (p1 / "config.json").exists() and str(p1).startswith(str(tmp_path))
    assert calls == [1]


def test_pretrain_config_key_changes_with_any_field():
    import dataclasses

    a = pt.PretrainConfig()
    assert a.key() == pt.PretrainConfig().key()
    keys = {a.key()}
    for f in dataclasses.fields(a):
        v = getattr(a, f.name)
        other = v + "-x" if isinstance(v, str) else v * 2 + 1
        keys.add(dataclasses.replace(a, **{f.name: type(v)(other)}).key())
    assert len(keys) == len(dataclasses.fields(a)) + 1  # every field, changed alone, gives a new key


def test_a_change_to_the_task_data_is_a_new_cached_checkpoint(monkeypatch, tmp_path):
    """The cache is keyed by the training data as well as the configuration: a synthetic task whose generator
    changed (same config) gets a new checkpoint, never the one pretrained on the old data."""
    from lfpo_bench.registry import TASKS

    monkeypatch.setenv("LFPO_BENCH_CACHE", str(tmp_path))
    cfg = pt.default_config("toy-code")
    before = pt.checkpoint_path(cfg)
    assert pt.checkpoint_path(cfg) == before  # stable for the same data
    cls = TASKS.get("toy-code")
    real = cls._load
    monkeypatch.setattr(cls, "_load", lambda self, split: real(self, split)[:-1] if split == "train" else real(self, split))
    after = pt.checkpoint_path(cfg)
    assert after != before and after.parent == before.parent and after.name.startswith(f"tiny-toy-code-{cfg.key()}-")


def test_tiny_at_steps_is_the_same_pretraining_with_fewer_steps_cached_apart(monkeypatch, tmp_path):
    """tiny:<task>@N: the task's default pretraining with N optimiser steps. It is its own cached checkpoint
    (the default is not touched), other weights than the default, and a bad N is refused naming the spelling."""
    import pytest

    from lfpo_bench.models.loader import load_model
    from lfpo_bench.types import UserError

    monkeypatch.setenv("LFPO_BENCH_CACHE", str(tmp_path))
    small = pt.PretrainConfig(task="sudoku4", steps=40, batch_size=16, d_model=16, n_layers=1, n_heads=1)
    monkeypatch.setitem(pt.DEFAULTS, "sudoku4", small)
    early = load_model("tiny:sudoku4@2", quiet=True)
    assert early.name == "tiny:sudoku4@2"
    full_path, early_path = pt.ensure_tiny("sudoku4", quiet=True), pt.ensure_tiny("sudoku4", quiet=True, steps=2)
    assert full_path != early_path and (early_path / "config.json").exists()
    import json

    assert json.loads((early_path / "pretrain.json").read_text())["config"]["steps"] == 2
    from safetensors.torch import load_file

    a, b = load_file(full_path / "model.safetensors"), load_file(early_path / "model.safetensors")
    assert not all(torch.equal(a[k], b[k]) for k in a)
    for bad in ("tiny:sudoku4@x", "tiny:sudoku4@", "tiny:sudoku4@0", "tiny:sudoku4@-3"):
        with pytest.raises(UserError, match="pretraining steps|whole number"):
            load_model(bad, quiet=True)
