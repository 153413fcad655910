"""Fast rollouts on CPU: merging LoRA into the base weights for sampling gives the same tokens as the plain
peft path, restores the base weights bit for bit, and leaves training results unchanged."""

import tempfile

import pytest
import torch

from lfpo_bench.decoding import Decoding, RolloutConfig
from lfpo_bench.fast_rollout import fast_rollout, lora_layers, merged_adapters
from lfpo_bench.models.loader import load_model
from lfpo_bench.sampler import generate
from lfpo_bench.trainer import TrainConfig, Trainer

pytest.importorskip("peft", reason="needs peft (the dist extra)")


def lora_llada(seed=0):
    from lfpo_bench.models.adapters import prepare_for_training

    lm = load_model("tiny-llada")
    prepare_for_training(lm, TrainConfig(lora_r=8, lora_alpha=16, lora_dropout=0.0, seed=seed))
    with torch.no_grad():  # trained-looking adapters: B is zero at init, which would make every path trivially equal
        g = torch.Generator().manual_seed(seed + 1)
        for n, p in lm.module.named_parameters():
            if "lora_B" in n:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
    return lm


def test_merged_rollout_gives_the_plain_paths_tokens_and_restores_the_weights():
    lm = lora_llada()
    lm.eval()
    base = {n: p.detach().clone() for n, p in lm.module.named_parameters()}
    ids, am = lm.encode_prompts(["12+3", "hello there"], 16)
    kw = dict(gen_length=16, steps=8, block_length=8)
    plain_greedy = generate(lm, ids, am, Decoding(**kw), record_trajectory=True)
    plain_sampled = generate(lm, ids, am, Decoding(temperature=1.0, **kw), generator=torch.Generator().manual_seed(0),
                             record_trajectory=True)
    assert lora_layers(lm.module), "the model has LoRA layers"
    with merged_adapters(lm.module):
        merged_logits = lm(torch.cat([ids, plain_greedy.completion], 1))
        fast_greedy = generate(lm, ids, am, Decoding(**kw), record_trajectory=True)
        fast_sampled = generate(lm, ids, am, Decoding(temperature=1.0, **kw), generator=torch.Generator().manual_seed(0),
                                record_trajectory=True)
    plain_logits = lm(torch.cat([ids, plain_greedy.completion], 1))
    assert (merged_logits - plain_logits).abs().max() < 1e-4  # same function, up to float32 rounding
    assert torch.equal(fast_greedy.completion, plain_greedy.completion)
    assert torch.equal(fast_greedy.commit_step, plain_greedy.commit_step)
    assert torch.equal(fast_sampled.completion, plain_sampled.completion)
    for n, p in lm.module.named_parameters():
        assert torch.equal(p, base[n]), f"{n} changed"
    assert not any(getattr(m, "merged", False) for m, _ in lora_layers(lm.module))


def test_a_failing_rollout_still_restores_the_weights():
    lm = lora_llada()
    before = {n: p.detach().clone() for n, p in lm.module.named_parameters()}
    with pytest.raises(RuntimeError, match="boom"):
        with merged_adapters(lm.module):
            raise RuntimeError("boom")
    assert all(torch.equal(p, before[n]) for n, p in lm.module.named_parameters())


@pytest.mark.parametrize("mode", ["merge", "bf16"])
def test_training_is_unchanged_by_the_fast_rollout_switch(mode):
    from lfpo_bench.config import make_task
    from lfpo_bench.registry import METHODS

    task = make_task("sudoku4")
    results = {}
    for m in ("plain", mode):
        lm = lora_llada()
        cfg = TrainConfig(updates=2, prompts_per_update=2, group_size=4, micro_batch=8, val_every=0, val_limit=4,
                          lora_r=8, lora_alpha=16, lora_dropout=0.0, rollout=RolloutConfig(steps=4, lora=m), checkpoint_every=0)
        lfpo = METHODS.get("lfpo")
        with tempfile.TemporaryDirectory() as d:
            tr = Trainer(lm, task, lfpo(lfpo.Config()), cfg, d, show_progress=False,
                         train_examples=task.load(task.train_split)[:8])
            logs = [tr.step(u) for u in range(2)]
        results[m] = ([e["reward_mean"] for e in logs], {n: p.detach().clone() for n, p in lm.module.named_parameters() if p.requires_grad})
    assert results["plain"][0] == results[mode][0]
    for n, p in results["plain"][1].items():
        assert torch.allclose(p, results[mode][1][n], atol=1e-6), n


def test_switches_are_checked():
    with pytest.raises(ValueError, match="rollout.lora"):
        RolloutConfig(lora="fused")
    lm = load_model("tiny-random")
    from lfpo_bench.config import make_task
    from lfpo_bench.registry import METHODS
    from lfpo_bench.types import UserError

    with pytest.raises(UserError, match="rollout.use_cache"), tempfile.TemporaryDirectory() as d:
        Trainer(lm, make_task("sudoku4"), METHODS.get("lfpo")(METHODS.get("lfpo").Config()), TrainConfig(rollout=RolloutConfig(use_cache=True)), d,
                show_progress=False)
    ids, am = lm.encode_prompts(["1 2", "3"], 8)
    plain = generate(lm, ids, am, Decoding(gen_length=8, steps=4, temperature=1.0), generator=torch.Generator().manual_seed(1))
    for mode in ("merge", "bf16"):  # the tiny model is fully fine-tuned (no LoRA): every switch leaves it as it is
        with fast_rollout(lm, RolloutConfig(lora=mode, tf32=True)):
            fast = generate(lm, ids, am, Decoding(gen_length=8, steps=4, temperature=1.0), generator=torch.Generator().manual_seed(1))
        assert torch.equal(fast.completion, plain.completion)


@pytest.mark.parametrize("which", ["llada", "llada-lora", "dream"])
def test_block_logits_equal_the_slice_of_the_full_logits(which, tmp_path):
    """The LM head on the block only (what the sampler asks for) gives the same numbers as slicing the full
    logits, including Dream's realignment at the first positions."""
    if which == "dream":
        from lfpo_bench.models.dream.tiny import make_tiny_dream

        lm = load_model(str(make_tiny_dream(tmp_path / "d")))
    else:
        lm = lora_llada() if which == "llada-lora" else load_model("tiny-llada")
    assert lm.supports_logits_range
    ids, am = lm.encode_prompts(["ab", "a longer prompt"], 8)
    x = torch.cat([ids, torch.full((2, 8), lm.mask_id)], 1)
    full_am = torch.cat([am, torch.ones(2, 8, dtype=am.dtype)], 1)
    full = lm(x, full_am)
    T = x.shape[1]
    for a, b in ((0, 4), (1, 5), (2, T), (T - 8, T)):
        assert torch.allclose(lm(x, full_am, logits_range=(a, b)), full[:, a:b], atol=1e-5), (a, b)
    plain = generate(lm, ids, am, Decoding(gen_length=8, steps=4, block_length=4))
    lm.supports_logits_range = False
    assert torch.equal(generate(lm, ids, am, Decoding(gen_length=8, steps=4, block_length=4)).completion, plain.completion)
