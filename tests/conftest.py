import os
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test sees one session-wide cache (pretrained tiny models are reused) unless it overrides it."""
    cache = os.environ.get("LFPO_BENCH_TEST_CACHE") or str(tmp_path_factory.getbasetemp() / "cache")
    monkeypatch.setenv("LFPO_BENCH_CACHE", cache)
    monkeypatch.setenv("LFPO_BENCH_PROGRESS", "0")


@pytest.fixture
def shared_data():
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data not present")
    return SHARED_DATA


@pytest.fixture
def tiny_random():
    from lfpo_bench.models.loader import new_tiny

    lm = new_tiny(0, d_model=32, n_layers=2, n_heads=2, max_position_embeddings=256)
    lm.module.eval()
    return lm


class FakeLM:
    """A model whose logits are a fixed function of the input, for sampler invariants.

    ``peak`` sets how confident it is: logits = peak * onehot(target) + small position-dependent noise.
    Records every input it is called with.
    """

    def __init__(self, vocab=12, mask_id=1, eos_id=2, peak=3.0, seed=0):
        from lfpo_bench.models.base import FamilyProfile

        self.mask_id = mask_id
        self.vocab = vocab
        self.peak = peak
        self.profile = FamilyProfile(name="fake", mask_id=mask_id, eos_ids=(eos_id,), pad_id=0)
        g = torch.Generator().manual_seed(seed)
        self.table = torch.randn(512, vocab, generator=g)  # per-position base logits
        self.calls = []
        self.name = "fake"
        self.supports_cache = False

    def __call__(self, ids, am=None):
        self.calls.append(ids.clone())
        B, T = ids.shape
        logits = self.table[:T].expand(B, T, self.vocab).clone()
        target = (torch.arange(T) * 7 + 3) % (self.vocab - 5) + 5  # never a special id
        logits[:, torch.arange(T), target] += self.peak
        logits[:, :, self.mask_id] = -1e4
        # depend on the context so that order matters: shift by the number of clean tokens
        logits += 0.01 * (ids != self.mask_id).sum(1, keepdim=True)[:, :, None].float()
        return logits

    @property
    def device(self):
        return torch.device("cpu")


@pytest.fixture
def fake_lm():
    return FakeLM()
