"""Sampler invariants: schedule arithmetic, no remasking, block order, batch/padding invariance,
seed reproducibility, trajectory record, threshold NFE, CFG accounting."""

import math

import pytest
import torch
from conftest import FakeLM

from lfpo_bench.decoding import Decoding
from lfpo_bench.sampler import check_schedule, generate, num_transfer_tokens, sample_tokens, state_at


def test_num_transfer_tokens_even_split_with_remainder_first():
    out = num_transfer_tokens(torch.tensor([10, 8, 3]), 4)
    assert out.tolist() == [[3, 3, 2, 2], [2, 2, 2, 2], [1, 1, 1, 0]]
    assert out.sum(1).tolist() == [10, 8, 3]


@pytest.mark.parametrize(
    "L,block,steps,msg",
    [(10, 4, 4, "not divisible by block_length"), (16, 4, 6, "not divisible by the number of blocks"), (8, 8, 16, "at most 8 steps")],
)
def test_bad_schedule_is_a_clear_value_error(L, block, steps, msg):
    with pytest.raises(ValueError, match=msg):
        check_schedule(L, block, steps, None)


def test_bad_schedule_raised_by_generate(fake_lm):
    with pytest.raises(ValueError, match="not divisible"):
        generate(fake_lm, torch.tensor([[5, 6]]), decoding=Decoding(gen_length=10, steps=5, block_length=4))


def test_commit_counts_follow_the_schedule_and_nothing_is_remasked(fake_lm):
    P, L = 3, 12
    g = generate(fake_lm, torch.tensor([[5, 6, 7]] * 2), decoding=Decoding(gen_length=L, steps=6, block_length=4), record_trajectory=True)
    assert g.nfe == 6 and len(fake_lm.calls) == 6
    prev = None
    for x in fake_lm.calls:
        comp = x[:, P:]
        if prev is not None:
            was_clean = prev != fake_lm.mask_id
            assert torch.equal(comp[was_clean], prev[was_clean]), "a committed token changed"
            # 3 blocks x 2 steps, 4 masks per block: 2 commits per step
            assert int(((prev == fake_lm.mask_id) & (comp != fake_lm.mask_id)).sum(1).max()) == 2
        prev = comp
    assert not (g.completion == fake_lm.mask_id).any()
    assert torch.equal(g.completion[:, :], g.sequences[:, P:])


def test_blocks_finish_in_order(fake_lm):
    g = generate(fake_lm, torch.tensor([[5, 6, 7]]), decoding=Decoding(gen_length=12, steps=12, block_length=4), record_trajectory=True)
    cs = g.commit_step[0].view(3, 4)
    assert int(cs[0].max()) < int(cs[1].min()) and int(cs[1].max()) < int(cs[2].min())


def test_commit_record_rebuilds_every_intermediate_state(fake_lm):
    P = 2
    g = generate(fake_lm, torch.tensor([[5, 6], [7, 8]]), decoding=Decoding(gen_length=8, steps=8, block_length=4, temperature=1.0, remasking="random"), generator=torch.Generator().manual_seed(1), record_trajectory=True)
    for s, x in enumerate(fake_lm.calls):
        assert torch.equal(state_at(g.completion, g.commit_step, s, fake_lm.mask_id), x[:, P:])


def test_greedy_output_is_identical_alone_and_in_a_left_padded_batch(tiny_random):
    lm = tiny_random
    lm.module.double()
    prompts = ["12345", "9", "hello world"]
    ids, am = lm.encode_prompts(prompts)
    assert (am[1] == 0).sum() == 10  # left padding
    batch = generate(lm, ids, am, Decoding(gen_length=8, steps=8, block_length=4)).completion
    for i, p in enumerate(prompts):
        one_ids, one_am = lm.encode_prompts([p])
        alone = generate(lm, one_ids, one_am, Decoding(gen_length=8, steps=8, block_length=4)).completion
        assert torch.equal(alone[0], batch[i]), f"prompt {i} differs alone vs batched"


def test_a_seed_reproduces_sampled_output(tiny_random):
    ids, am = tiny_random.encode_prompts(["abc", "de"])
    kw = dict(gen_length=8, steps=4, block_length=8, temperature=1.0, remasking="random")
    a = generate(tiny_random, ids, am, Decoding(**kw), generator=torch.Generator().manual_seed(3)).completion
    b = generate(tiny_random, ids, am, Decoding(**kw), generator=torch.Generator().manual_seed(3)).completion
    c = generate(tiny_random, ids, am, Decoding(**kw), generator=torch.Generator().manual_seed(4)).completion
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_threshold_decoding_needs_fewer_passes_on_a_confident_model():
    confident = FakeLM(peak=30.0)
    fixed = generate(confident, torch.tensor([[5, 6]]), decoding=Decoding(gen_length=16, steps=16, block_length=8))
    confident2 = FakeLM(peak=30.0)
    fast = generate(confident2, torch.tensor([[5, 6]]), decoding=Decoding(gen_length=16, steps=16, block_length=8, threshold=0.9))
    assert fixed.nfe == 16
    assert fast.nfe == 2  # one pass per block
    assert torch.equal(fast.completion, fixed.completion)


def test_threshold_commits_at_least_one_token_per_step_on_an_unsure_model():
    unsure = FakeLM(peak=0.0)
    g = generate(unsure, torch.tensor([[5, 6]]), decoding=Decoding(gen_length=8, steps=8, block_length=4, threshold=0.99), record_trajectory=True)
    assert g.nfe == 8  # nothing reaches 0.99, so exactly one token per pass
    assert sorted(g.commit_step[0].tolist()) == list(range(8))


def test_cfg_counts_two_evaluations_per_step_and_masks_the_prompt():
    lm = FakeLM()
    g = generate(lm, torch.tensor([[5, 6, 7]]), decoding=Decoding(gen_length=4, steps=2, block_length=4, cfg_scale=1.0))
    assert g.nfe == 4 and g.steps == 2
    both = lm.calls[0]
    assert both.shape[0] == 2
    assert (both[1, :3] == lm.mask_id).all() and (both[0, :3] != lm.mask_id).all()


def test_stop_at_eos_fills_the_rest_without_passes():
    class EosLM(FakeLM):
        def __call__(self, ids, am=None):
            lg = super().__call__(ids, am)
            lg[:, :, 2] = 100.0  # always predicts EOS
            return lg

    lm = EosLM()
    g = generate(lm, torch.tensor([[5]]), decoding=Decoding(gen_length=8, steps=8, block_length=2, stop_at_eos=True), record_trajectory=True)
    assert g.nfe == 2  # first block only
    assert (g.completion == 2).all()
    assert (g.commit_step[0, 2:] == g.steps).all()  # filled after the last pass: masked in every state


def test_gumbel_max_samples_the_softmax_distribution():
    logits = torch.tensor([[0.0, 1.0, 2.0, -1.0]]).expand(40000, 4)
    draws = sample_tokens(logits, 1.0, torch.Generator().manual_seed(0))
    freq = torch.bincount(draws, minlength=4).double() / draws.numel()
    assert torch.allclose(freq, torch.softmax(logits[0].double(), -1), atol=0.01)
    # temperature 0.5 sharpens: softmax(logits / 0.5)
    draws = sample_tokens(logits, 0.5, torch.Generator().manual_seed(0))
    freq = torch.bincount(draws, minlength=4).double() / draws.numel()
    assert torch.allclose(freq, torch.softmax(logits[0].double() / 0.5, -1), atol=0.01)


def test_greedy_ignores_the_generator():
    logits = torch.randn(3, 5, 9)
    assert torch.equal(sample_tokens(logits, 0.0, None), logits.argmax(-1))


# ---- other families' decoding rules -------------------------------------------------------------------
class EosLover(FakeLM):
    """FakeLM whose most likely token at completion positions ``eos_at`` is EOS (2), and EoT (3) at ``eot_at``."""

    def __init__(self, eos_at=(), eot_at=(), **kw):
        super().__init__(**kw)
        from lfpo_bench.models.base import FamilyProfile

        self.profile = FamilyProfile(name="fake", mask_id=1, eos_ids=(2, 3), pad_id=0)
        self.eos_at, self.eot_at = eos_at, eot_at

    def __call__(self, ids, am=None):
        lg = super().__call__(ids, am)
        for pos in self.eos_at:
            lg[:, pos, 2] += 50.0
        for pos in self.eot_at:
            lg[:, pos, 3] += 50.0
        return lg


def test_logits_eos_inf_never_draws_eos_at_any_temperature():
    P = 2
    lm = EosLover(eos_at=(P + 1, P + 4))
    for t in (0.0, 1.0):
        base = generate(lm, torch.tensor([[5, 6]]), decoding=Decoding(gen_length=6, steps=3, temperature=t), generator=torch.Generator().manual_seed(0))
        assert (base.completion == 2).any()
        g = generate(lm, torch.tensor([[5, 6]]), decoding=Decoding(gen_length=6, steps=3, temperature=t, logits_eos_inf=True), generator=torch.Generator().manual_seed(0))
        assert not (g.completion == 2).any()


def test_confidence_eos_eot_inf_commits_predicted_end_tokens_last():
    P = 2
    lm = EosLover(eos_at=(P + 0,), eot_at=(P + 5,))
    kw = dict(gen_length=6, steps=6)
    plain = generate(lm, torch.tensor([[5, 6]]), decoding=Decoding(**kw), record_trajectory=True)
    assert set(plain.commit_step[0, [0, 5]].tolist()) == {0, 1}  # confident end tokens go first
    g = generate(lm, torch.tensor([[5, 6]]), decoding=Decoding(confidence_eos_eot_inf=True, **kw), record_trajectory=True)
    assert set(g.commit_step[0, [0, 5]].tolist()) == {4, 5}  # confidence 0: committed last
    assert g.completion[0, 0] == 2 and g.completion[0, 5] == 3  # still the predicted tokens


def test_confidence_rules_by_hand():
    from lfpo_bench.sampler import confidence

    lg = torch.log(torch.tensor([[[0.5, 0.3, 0.2]]]))
    x0 = torch.tensor([[1]])
    assert confidence("low_confidence", lg, x0, 0.0, None).item() == pytest.approx(0.3)
    assert confidence("maskgit_plus", lg, x0, 0.0, None).item() == pytest.approx(0.3)
    assert confidence("topk_margin", lg, x0, 0.0, None).item() == pytest.approx(0.2)
    ent = 0.5 * math.log(0.5) + 0.3 * math.log(0.3) + 0.2 * math.log(0.2)
    assert confidence("entropy", lg, x0, 0.0, None).item() == pytest.approx(ent, abs=1e-6)
    # tempered: maskgit_plus at T=0.5 uses softmax(2 log p) = p^2 / sum p^2
    assert confidence("maskgit_plus", lg, x0, 0.5, None).item() == pytest.approx(0.09 / 0.38)
    assert confidence("low_confidence", lg, x0, 0.5, None).item() == pytest.approx(0.3)  # LLaDA: untempered
    # end tokens removed from the softmax: the rest renormalised, an end token's confidence is 0
    assert confidence("low_confidence", lg, x0, 0.0, None, exclude=(0,)).item() == pytest.approx(0.6)
    assert confidence("low_confidence", lg, torch.tensor([[0]]), 0.0, None, exclude=(0,)).item() == 0.0


def test_top_p_and_top_k_filters_by_hand():
    from lfpo_bench.sampler import filter_logits

    lg = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    keep = lambda out: torch.isfinite(out).tolist()  # noqa: E731
    assert keep(filter_logits(lg, 0.6, None)) == [True, True, False, False]  # mass before token 3 is 0.8 > 0.6
    assert keep(filter_logits(lg, 0.4, None)) == [True, False, False, False]
    assert keep(filter_logits(lg, None, 3)) == [True, True, True, False]
    # nucleus of the tempered distribution (T=0.5: p^2 normalised = .69, .25, .06, .01): top_p 0.6 keeps one
    assert keep(filter_logits(lg, 0.6, None, temperature=0.5)) == [True, False, False, False]


def test_top_k_one_samples_like_greedy(fake_lm):
    greedy = generate(fake_lm, torch.tensor([[5, 6, 7]]), decoding=Decoding(gen_length=8, steps=4))
    sampled = generate(fake_lm, torch.tensor([[5, 6, 7]]), decoding=Decoding(gen_length=8, steps=4, temperature=1.5, top_k=1), generator=torch.Generator().manual_seed(3))
    assert torch.equal(greedy.completion, sampled.completion)
