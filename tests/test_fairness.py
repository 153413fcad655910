"""What decides a comparison besides the objective: which tokens a loss counts, the scope of a softmax over
advantages, a degenerate replay setting."""

import dataclasses

import pytest
import torch
from test_contract import setup

from lfpo_bench.registry import METHODS
from lfpo_bench.trainer import accumulate, select_groups
from lfpo_bench.types import RolloutBatch


class PoisonPadding:
    """The policy, with noise added to its logits at the completion positions after the first EOS: a loss
    that does not count padding cannot see the difference."""

    supports_logits_range = False

    def __init__(self, lm, after_eos: torch.Tensor, seed: int):
        self._lm, self._after, self._seed = lm, after_eos, seed

    def __getattr__(self, name):
        return getattr(self._lm, name)

    def __call__(self, x, am, **kw):
        out = self._lm(x, am)
        n, L = self._after.shape
        reps = out.shape[0] // n  # estimators stack several passes of the same rows
        after = self._after.repeat(reps, 1)
        g = torch.Generator().manual_seed(self._seed)
        noise = 3 * torch.randn(out.shape[0], L, out.shape[-1], generator=g)
        tail = out[:, -L:] + noise * after[..., None]
        return torch.cat([out[:, :-L], tail], 1)


def padded_batch(lm, G=2):
    eos = lm.profile.eos_ids[0]
    ids, am = lm.encode_prompts(["12", "345"])
    rows = [lm.tokenizer.encode(w) for w in ("ab", "uvw", "abcd", "u")]
    L = 6
    comp = torch.full((4, L), eos, dtype=torch.long)
    for i, r in enumerate(rows):
        comp[i, : len(r)] = torch.tensor(r)
    cm = lm.completion_mask(comp)
    commit = torch.stack([torch.randperm(L, generator=torch.Generator().manual_seed(i)) for i in range(4)])
    batch = RolloutBatch(prompt_ids=ids.repeat_interleave(G, 0), prompt_mask=am.repeat_interleave(G, 0), completion_ids=comp,
                         completion_mask=cm, commit_step=commit, rewards=torch.tensor([1.0, 0.0, 0.0, 1.0]),
                         advantages=torch.zeros(4), group_size=G, steps=L, mask_id=lm.mask_id)
    return batch, cm == 0


def loss_with(lm, name, batch, after, seed, **over):
    method, ctx = setup(lm, name, **over)
    ctx.policy = PoisonPadding(lm, after, seed)
    lm.module.zero_grad()
    kept = select_groups(method, batch)
    assert kept is not None and kept.n == batch.n  # both groups carry signal: one micro-batch of every row
    method.on_batch(kept)
    accumulate(method, ctx, [kept], [method.prepare(ctx, kept, 0)], 0)  # loss and backward
    # the gradient, not the loss value: a PPO loss at ratio 1 reads -mean(A) whatever the logits
    return torch.cat([p.grad.flatten() for p in lm.module.parameters() if p.grad is not None])


@pytest.fixture
def lm(tiny_random):
    tiny_random.module.train()
    return tiny_random


def test_every_method_declares_which_tokens_it_counts_and_honours_it(lm):
    batch, after = padded_batch(lm)
    assert after.any() and (~after).any()
    for name in METHODS.names():
        cls = METHODS.get(name)
        if not cls.trains:
            continue
        fields = {f.name: f.default for f in dataclasses.fields(cls.Config)}
        assert "count_padding" in fields, f"{name}: no count_padding knob"
        # a method whose reference lets the padding compete for being unmasked (MAP's position policy) declares
        # that knob; with it off, count_padding=False must keep every position after the first EOS out
        extra = {"padding_competes": False} if "padding_competes" in fields else {}
        for count in (False, True):
            a = loss_with(lm, name, batch, after, 1, count_padding=count, **extra)
            b = loss_with(lm, name, batch, after, 2, count_padding=count, **extra)
            assert a.abs().sum() > 0, name
            if count:
                assert not torch.allclose(a, b, atol=1e-6), f"{name}: count_padding=True but the padding positions do not matter"
            else:
                assert torch.allclose(a, b, atol=1e-6), f"{name}: the gradient reads positions after the first EOS"


def test_padding_defaults_follow_each_reference():
    # the references that score tokens up to the first EOS, and the two that train on the whole generation
    want = {"diffu_grpo": False, "wd1": False, "spg": False, "coupled_grpo": False, "trace_rl": False, "d2": False, "map": False, "espo": True,
            "sft": True, "lfpo": False}
    got = {n: METHODS.get(n).Config().count_padding for n in want}
    assert got == want


def test_trace_rl_never_silently_replays_one_merged_step(tmp_path):
    from lfpo_bench.config import make_task
    from lfpo_bench.decoding import RolloutConfig
    from lfpo_bench.models.loader import new_tiny
    from lfpo_bench.trainer import TrainConfig, Trainer
    from lfpo_bench.types import UserError

    cls = METHODS.get("trace_rl")
    default = cls(cls.Config())
    for steps in (2, 4, 8, 16, 64, 256):
        k = default.shrink_for(steps)
        assert 1 <= k and -(-steps // k) >= 2, (steps, k)  # at least two replayed steps
    assert default.shrink_for(256) == 8  # the reference's value where it is meaningful
    lm = new_tiny(0, d_model=32, n_layers=1, n_heads=2, max_position_embeddings=64)
    task = make_task("sudoku4")
    for shrink, steps in ((8, 8), (5, 4), (16, 8)):
        with pytest.raises(UserError, match=r"shrink=\d+ merges all \d+ rollout steps.*--set shrink="):
            Trainer(lm, task, cls(cls.Config(shrink=shrink)), TrainConfig(updates=1, rollout=RolloutConfig(steps=steps)), tmp_path / f"{shrink}-{steps}",
                    show_progress=False)
    Trainer(lm, task, cls(cls.Config(shrink=2)), TrainConfig(updates=1, rollout=RolloutConfig(steps=8)), tmp_path / "ok", show_progress=False)
    with pytest.raises(ValueError, match="shrink"):
        cls.Config(shrink=0)
