"""Dream and DiffuCoder on CPU: tiny random checkpoints in the hub layout (remote-code files that raise on
import, a custom tokenizer class) load natively, agree with an independent float32 computation written here
from the official architecture, are padding-invariant, decode with Dream's rules, and are loaded strictly."""

import builtins
import json
import math
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from lfpo_bench.decoding import Decoding
from lfpo_bench.models.dream.tiny import make_tiny_dream
from lfpo_bench.models.loader import load_model
from lfpo_bench.sampler import dream_transfer, generate
from lfpo_bench.types import UserError


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("dream")
    return {"dream": make_tiny_dream(root / "Dream-v0-tiny"),
            "diffucoder": make_tiny_dream(root / "DiffuCoder-tiny", seed=1, kv_heads=4, tie=True)}


def reference_logits(path, ids):
    """Dream's forward from its weights by the official architecture's formulas, float32, unpadded (positions
    0..T-1), written independently of lfpo_bench's modules; native logits (position i predicts i+1)."""
    cfg = json.loads((path / "config.json").read_text())
    w = load_file(str(path / "model.safetensors"))
    H, Hk = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    D = cfg["hidden_size"] // H
    eps, theta = cfg["rms_norm_eps"], cfg["rope_theta"]

    def rms(x, g):
        return g * (x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps))

    def rot(x):  # x [T, heads, D]; rotate_half layout
        T = x.shape[0]
        inv = theta ** (-torch.arange(0, D, 2, dtype=torch.float64) / D)
        ang = torch.arange(T, dtype=torch.float64)[:, None] * inv[None]
        cos, sin = torch.cat([ang.cos(), ang.cos()], -1)[:, None].float(), torch.cat([ang.sin(), ang.sin()], -1)[:, None].float()
        x1, x2 = x[..., : D // 2], x[..., D // 2 :]
        return x * cos + torch.cat([-x2, x1], -1) * sin

    x = w["model.embed_tokens.weight"][ids]
    T = len(ids)
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = rms(x, w[p + "input_layernorm.weight"])
        q = (h @ w[p + "self_attn.q_proj.weight"].T + w[p + "self_attn.q_proj.bias"]).view(T, H, D)
        k = (h @ w[p + "self_attn.k_proj.weight"].T + w[p + "self_attn.k_proj.bias"]).view(T, Hk, D)
        v = (h @ w[p + "self_attn.v_proj.weight"].T + w[p + "self_attn.v_proj.bias"]).view(T, Hk, D)
        q, k = rot(q), rot(k)
        out = []
        for head in range(H):  # grouped-query: head j reads key/value group j // (H / Hk); no causal mask
            g = head // (H // Hk)
            a = torch.softmax(q[:, head] @ k[:, g].T / math.sqrt(D), -1)
            out.append(a @ v[:, g])
        x = x + torch.cat(out, -1) @ w[p + "self_attn.o_proj.weight"].T
        h = rms(x, w[p + "post_attention_layernorm.weight"])
        gate = h @ w[p + "mlp.gate_proj.weight"].T
        x = x + (gate * torch.sigmoid(gate) * (h @ w[p + "mlp.up_proj.weight"].T)) @ w[p + "mlp.down_proj.weight"].T
    head_w = w.get("lm_head.weight", w["model.embed_tokens.weight"])
    return rms(x, w["model.norm.weight"]) @ head_w.T


@pytest.mark.parametrize("family", ["dream", "diffucoder"])
def test_hub_layout_checkpoint_loads_natively_and_matches_the_reference(ckpts, family, monkeypatch):
    def no_prompt(*a, **k):
        raise AssertionError("a batch job asked a question on stdin")

    monkeypatch.setattr(builtins, "input", no_prompt)
    lm = load_model(str(ckpts[family]))
    assert lm.profile.name == family and lm.profile.shift_logits
    assert lm.profile.mask_id == lm.tokenizer.convert_tokens_to_ids("<|mask|>")
    assert not [m for m in sys.modules if "modeling_dream" in m and "lfpo_bench" not in m], "remote code was imported"
    ids = torch.tensor([3, 40, 41, 42, 4, 4, 4, 43, 2])
    want = reference_logits(ckpts[family], ids)
    got = lm.module(input_ids=ids[None]).logits[0]
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()
    realigned = lm(ids[None])[0]  # the harness's convention: row i predicts token i
    assert torch.equal(realigned[1:], got[:-1])


def test_left_padded_batch_equals_each_prompt_alone(ckpts):
    lm = load_model(str(ckpts["dream"]))
    ids, am = lm.encode_prompts(["short", "a much longer prompt"], 4)
    canvas = torch.cat([ids, torch.full((2, 4), lm.mask_id)], 1)
    full = torch.cat([am, torch.ones(2, 4, dtype=am.dtype)], 1)
    batch = lm(canvas, full)
    for r in range(2):
        real = full[r].bool()
        alone = lm(canvas[r : r + 1, real])[0]
        # every position after the first real token (the first one's realigned row has no predecessor to
        # come from; it is a prompt token and is never predicted)
        assert torch.allclose(batch[r, real][1:], alone[1:], atol=1e-5)


def test_dream_decoding_runs_with_its_schedule_and_rules(ckpts):
    lm = load_model(str(ckpts["dream"]))
    ids, am = lm.encode_prompts(["abc", "hello"], 12)
    g = generate(lm, ids, am, Decoding(gen_length=12, steps=4, block_length=12, temperature=0.2, top_p=0.95, remasking="entropy", schedule="dream"), generator=torch.Generator().manual_seed(0), record_trajectory=True)
    assert g.nfe == 4 and (g.commit_step >= 0).all()
    # m = 12 masks, eps = 1e-3: t_i = 1 - i * 0.999 / 4; floor(12 * 0.24975) = 2, floor(10 * 0.33289) = 3,
    # floor(7 * 0.49900) = 3, and the last step commits the 4 left
    for row in g.commit_step:
        assert torch.bincount(row, minlength=4).tolist() == [2, 3, 3, 4]
    assert [int(dream_transfer(torch.tensor([m]), i, 4)) for i, m in enumerate([12, 10, 7, 4])] == [2, 3, 3, 4]


@pytest.mark.parametrize("change, flag", [({"rope_scaling": {"type": "yarn", "factor": 4.0}}, "rope_scaling"),
                                          ({"use_sliding_window": True}, "use_sliding_window"),
                                          ({"hidden_act": "gelu"}, "hidden_act")])
def test_dream_settings_that_change_the_maths_are_refused(tmp_path, change, flag):
    path = make_tiny_dream(tmp_path / "d", **change)
    with pytest.raises(UserError, match=flag):
        load_model(str(path))


@pytest.mark.parametrize("change", [{"include_qkv_bias": True}, {"scale_logits": True}, {"input_emb_norm": True},
                                    {"block_group_size": 2}, {"alibi": True}, {"clip_qkv": 8.0}])
def test_llada_flags_that_change_the_maths_are_refused(tmp_path, change):
    from lfpo_bench.models.llada.tiny import make_tiny_llada

    path = make_tiny_llada(tmp_path / "l")
    cfg = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**cfg, **change}))
    with pytest.raises(UserError, match=next(iter(change))):
        load_model(str(path))


@pytest.mark.parametrize("edit, word", [("drop", "missing"), ("extra", "unexpected"), ("shape", "mismatched")])
def test_weights_that_do_not_match_are_an_error_unless_allowed(tmp_path, monkeypatch, edit, word):
    path = make_tiny_dream(tmp_path / "d")
    w = load_file(str(path / "model.safetensors"))
    if edit == "drop":
        del w["model.layers.1.mlp.up_proj.weight"]
    elif edit == "extra":
        w["model.layers.0.self_attn.q_norm.weight"] = torch.ones(16)
    else:
        w["model.layers.0.mlp.up_proj.weight"] = torch.zeros(3, 64)
    save_file(w, str(path / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(UserError, match=word):
        load_model(str(path))
    if edit != "shape":
        monkeypatch.setenv("LFPO_BENCH_ALLOW_WEIGHT_MISMATCH", "1")
        assert load_model(str(path)).profile.name == "dream"


def test_custom_tokenizer_class_with_only_vocab_and_merges_loads_without_its_code(tmp_path, monkeypatch):
    """Dream's hub tokenizer: a custom class (tokenization_dream.py) over Qwen2's byte-level BPE files."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from lfpo_bench.models.hf import load_tokenizer

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.train_from_iterator(["hello world 123 def f(x): return x"] * 20,
                           trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tk.model.save(str(tmp_path))
    n = tk.get_vocab_size()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|mask|>"]
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "DreamTokenizer", "auto_map": {"AutoTokenizer": ["tokenization_dream.DreamTokenizer", None]},
        "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>", "mask_token": "<|mask|>",
        "added_tokens_decoder": {str(n + i): {"content": t, "special": True, "lstrip": False, "rstrip": False, "normalized": False,
                                              "single_word": False} for i, t in enumerate(specials)}}))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "Dream", "auto_map": {"AutoConfig": "configuration_dream.DreamConfig"}}))
    (tmp_path / "tokenization_dream.py").write_text("raise RuntimeError('remote code imported')\n")
    monkeypatch.setattr(builtins, "input", lambda *a, **k: (_ for _ in ()).throw(AssertionError("prompted on stdin")))
    tok = load_tokenizer(tmp_path)
    assert tok.mask_token_id == n + 3 and tok.convert_tokens_to_ids("<|im_end|>") == n + 2
    assert tok.decode(tok("hello world")["input_ids"]) == "hello world"


def test_eval_on_a_dream_checkpoint_uses_the_family_rule_unless_told(ckpts, tmp_path):
    """No decoding flags: Dream's schedule, entropy confidence, top-p 0.95 at 0.2, one block over the canvas;
    a flag given by the user wins."""
    from lfpo_bench.decoding import DecodingSpec
    from lfpo_bench.eval_job import EvalArgs, run_eval
    from lfpo_bench.evaluate import EvalOptions
    from lfpo_bench.timing import TimingConfig

    rows, _, _ = run_eval(EvalArgs(task="toy-code", model=str(ckpts["dream"]), decoding=DecodingSpec(steps=(4,)),
                                   opts=EvalOptions(limit=2), show_progress=False,
                                   out=str(tmp_path / "a.jsonl"), timing=TimingConfig(reps=0)))
    d = rows[0].config["decoding"]
    assert (d["schedule"], d["remasking"], d["top_p"], d["temperature"]) == ("dream", "entropy", 0.95, 0.2)
    assert d["block_length"] == d["gen_length"]
    rows, _, _ = run_eval(EvalArgs(task="toy-code", model=str(ckpts["dream"]), opts=EvalOptions(limit=2), show_progress=False,
                                   out=str(tmp_path / "b.jsonl"), timing=TimingConfig(reps=0),
                                   decoding=DecodingSpec(steps=(4,), temperature=0.0, remasking="low_confidence", schedule="even")))
    d = rows[0].config["decoding"]
    assert (d["temperature"], d["remasking"], d["schedule"]) == (0.0, "low_confidence", "even") and d["schema"] == 2
