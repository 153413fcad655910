"""Real-model families on CPU: the native LLaDA (save/load, padding, KV cache), family profiles from configs,
the Dream/DiffuCoder logit shift through remote code, and the offline error for hub ids."""

import json
import types

import pytest
import torch

from lfpo_bench.decoding import Decoding
from lfpo_bench.models.hf import LLADA_EOS, LLADA_EOT, LLADA_MASK, family_of, profile_for
from lfpo_bench.models.llada import LLaDAConfig, LLaDAModelLM
from lfpo_bench.models.loader import load_model
from lfpo_bench.sampler import generate
from lfpo_bench.types import UserError


@pytest.fixture
def tiny_llada_module():
    cfg = LLaDAConfig(d_model=32, n_heads=4, n_kv_heads=2, n_layers=2, mlp_hidden_size=64, vocab_size=64, embedding_size=64,
                      rope_theta=10000.0, mask_token_id=63, eos_token_id=1, pad_token_id=1)
    torch.manual_seed(0)
    return LLaDAModelLM(cfg).eval()


def test_native_llada_round_trips_through_save_and_load(tmp_path, tiny_llada_module):
    tiny_llada_module.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["model_type"] == "llada" and "auto_map" not in cfg
    again = LLaDAModelLM.from_pretrained(tmp_path).eval()
    x = torch.randint(0, 63, (2, 9))
    assert torch.equal(again(input_ids=x).logits, tiny_llada_module(input_ids=x).logits)


def test_weight_names_follow_the_official_checkpoint(tiny_llada_module):
    names = set(tiny_llada_module.state_dict())
    for n in ("model.transformer.wte.weight", "model.transformer.blocks.0.q_proj.weight", "model.transformer.blocks.1.attn_out.weight",
              "model.transformer.blocks.0.ff_proj.weight", "model.transformer.blocks.0.up_proj.weight",
              "model.transformer.blocks.0.ff_out.weight", "model.transformer.blocks.0.attn_norm.weight",
              "model.transformer.blocks.0.ff_norm.weight", "model.transformer.ln_f.weight", "model.transformer.ff_out.weight"):
        assert n in names, n


def test_padding_does_not_change_outputs(tiny_llada_module):
    x = torch.tensor([[5, 6, 7, 8]])
    padded = torch.tensor([[1, 1, 1, 5, 6, 7, 8]])
    am = torch.tensor([[0, 0, 0, 1, 1, 1, 1]])
    assert torch.allclose(tiny_llada_module(input_ids=x).logits[0], tiny_llada_module(input_ids=padded, attention_mask=am).logits[0, 3:],
                          atol=1e-5)


def test_prefix_kv_cache_reproduces_the_full_forward(tiny_llada_module):
    m = tiny_llada_module
    x = torch.randint(0, 63, (2, 12))
    am = torch.ones_like(x)
    am[1, :3] = 0
    full = m(input_ids=x, attention_mask=am, prefix_len=7)
    suffix = m(input_ids=x[:, 7:], attention_mask=am, past_key_values=full.prefix_cache).logits
    assert torch.allclose(suffix, full.logits[:, 7:], atol=1e-5)


def test_cached_decoding_equals_full_recomputation_when_each_block_is_one_step():
    lm = load_model("tiny-llada")
    ids, am = lm.encode_prompts(["12", "hello there"], 8)
    kw = dict(gen_length=8, block_length=2, steps=4)  # one step per block: every step refreshes the cache
    assert torch.equal(generate(lm, ids, am, Decoding(use_cache=True, **kw)).completion, generate(lm, ids, am, Decoding(**kw)).completion)


def test_cached_decoding_first_step_of_each_block_matches_and_nfe_is_unchanged():
    lm = load_model("tiny-llada")
    ids, am = lm.encode_prompts(["abc"], 8)
    a = generate(lm, ids, am, Decoding(gen_length=8, block_length=4, steps=8, use_cache=True))
    b = generate(lm, ids, am, Decoding(gen_length=8, block_length=4, steps=8))
    assert a.nfe == b.nfe == 8


def test_family_detection_and_profiles_from_configs():
    assert family_of("llada", "GSAI-ML/LLaDA-8B-Instruct") == "llada"
    assert family_of("Dream", "Dream-org/Dream-v0-Instruct-7B") == "dream"
    assert family_of("Dream", "apple/DiffuCoder-7B-cpGRPO") == "diffucoder"
    # model_type decides, whatever the path says; the name only separates DiffuCoder from Dream
    assert family_of("Dream", "/runs/llada-baseline/checkpoint") == "dream"
    assert family_of("llada", "/models/dream-copy") == "llada"
    with pytest.raises(UserError, match="model_type='gpt2'.*not a supported"):
        family_of("gpt2", "my-llada-finetune")
    with pytest.raises(UserError, match="cannot tell"):
        family_of(None, "gpt2")
    tok = types.SimpleNamespace(convert_tokens_to_ids=lambda t: {"<|eot_id|>": LLADA_EOT}.get(t, 0), unk_token_id=0)
    p = profile_for("llada", types.SimpleNamespace(mask_token_id=None, eos_token_id=None, max_sequence_length=4096), tok)
    assert (p.mask_id, p.eos_ids, p.pad_id, p.shift_logits) == (LLADA_MASK, (LLADA_EOS, LLADA_EOT), LLADA_EOS, False)
    qtok = types.SimpleNamespace(mask_token_id=151666, eos_token_id=151643, pad_token_id=151643, unk_token_id=None,
                                 convert_tokens_to_ids=lambda t: {"<|im_end|>": 151645, "<|endoftext|>": 151643}[t])
    d = profile_for("dream", types.SimpleNamespace(max_position_embeddings=131072), qtok)
    assert (d.mask_id, d.eos_ids, d.shift_logits, d.pad_id) == (151666, (151643, 151645), True, 151643)
    with pytest.raises(UserError, match="mask_token_id"):
        profile_for("diffucoder", types.SimpleNamespace(), types.SimpleNamespace(mask_token_id=None))


def test_hub_id_offline_says_how_to_get_the_model(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(UserError, match="huggingface-cli download GSAI-ML/LLaDA-8B-Instruct"):
        load_model("GSAI-ML/LLaDA-8B-Instruct")


@pytest.mark.integration
def test_a_saved_tiny_llada_checkpoint_runs_through_lfpo_run_with_lora(tmp_path):
    import os
    import subprocess
    import sys

    from lfpo_bench.models.llada.tiny import make_tiny_llada

    ckpt = make_tiny_llada(tmp_path / "ckpt")
    cmd = [sys.executable, "-m", "lfpo_bench.cli", "run", "--model", str(ckpt), "--method", "lfpo", "--task", "sudoku4",
           "--updates", "2", "--steps", "4", "--limit", "8", "--out-dir", str(tmp_path / "runs"), "--run-id", "r",
           "--set", "train.val_limit=4", "--set", "train.prompts_per_update=2", "--set", "train.group_size=2",
           "--set", "train.lora_r=8", "--set", "train.rollout.steps=4", "--set", "train.select=last"]
    p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "LFPO_BENCH_PROGRESS": "0"}, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    out = tmp_path / "runs" / "r" / "checkpoint"
    assert (out / "adapter_config.json").exists() and (out / "adapter_model.safetensors").exists()
    again = load_model(str(out))  # base model + adapters, as a user would reload the run
    assert "lora" in type(again.module).__module__.lower() or hasattr(again.module, "peft_config")


def test_4bit_loading_on_a_cpu_is_a_clear_error():
    from lfpo_bench.models.hf import quantization_config

    assert quantization_config(False, "cpu") is None
    with pytest.raises(UserError, match="needs a CUDA device"):
        quantization_config(True, "cpu")
