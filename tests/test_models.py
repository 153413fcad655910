"""Tiny model: transformers round trip in a fresh process, padding invariance, tokenizer, loader errors."""

import json
import subprocess
import sys

import pytest
import torch

from lfpo_bench.models.loader import load_model, new_tiny, save_model
from lfpo_bench.models.tokenizer import CharTokenizer
from lfpo_bench.types import UserError


def test_tiny_roundtrip_through_automodel_remote_code_in_a_fresh_process(tmp_path, tiny_random):
    path = save_model(tiny_random, tmp_path / "ckpt")
    x = torch.tensor([[5, 6, 7, 1, 1, 9]])
    am = torch.tensor([[0, 1, 1, 1, 1, 1]])
    expected = tiny_random(x, am)
    torch.save({"x": x, "am": am}, tmp_path / "in.pt")
    code = (
        "import torch, sys\n"
        "from transformers import AutoModel\n"
        f"m = AutoModel.from_pretrained({str(path)!r}, trust_remote_code=True)\n"
        "assert 'transformers_modules' in type(m).__module__, type(m).__module__\n"
        f"d = torch.load({str(tmp_path / 'in.pt')!r})\n"
        f"torch.save(m(input_ids=d['x'], attention_mask=d['am']).logits, {str(tmp_path / 'out.pt')!r})\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path, capture_output=True)
    got = torch.load(tmp_path / "out.pt")
    assert torch.equal(got, expected)
    # and through our own loader
    again = load_model(str(path))
    assert torch.equal(again(x, am), expected)


def test_left_padding_does_not_change_logits_of_real_tokens(tiny_random):
    lm = tiny_random
    x = torch.tensor([[5, 6, 7, 8]])
    padded = torch.tensor([[0, 0, 5, 6, 7, 8]])
    am = torch.tensor([[0, 0, 1, 1, 1, 1]])
    assert torch.allclose(lm(x)[0], lm(padded, am)[0, 2:], atol=1e-5)


def test_tokenizer_roundtrip_and_specials(tmp_path):
    tok = CharTokenizer()
    text = "def f(x):\n\treturn x*2  # ok"
    assert tok.decode(tok.encode(text)) == text
    assert tok.decode([tok.mask_token_id, tok.encode("a")[0]], skip_special_tokens=False) == "[MASK]a"
    assert tok.encode("é") == tok.encode("?")
    tok.save_pretrained(tmp_path)
    assert CharTokenizer.from_pretrained(tmp_path).itos == tok.itos


def test_decode_cuts_at_first_eos_and_completion_mask_includes_it(tiny_random):
    lm = tiny_random
    a, b = lm.tokenizer.encode("ab")
    eos = lm.profile.eos_ids[0]
    comp = torch.tensor([[a, b, eos, a, eos], [a, a, a, a, a]])
    assert lm.decode(comp) == ["ab", "aaaaa"]
    assert lm.completion_mask(comp).tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]


def test_prompts_longer_than_the_model_are_cut_from_the_left_with_a_warning(caplog):
    lm = new_tiny(0, d_model=16, n_layers=1, n_heads=1, max_position_embeddings=32)
    ids, am = lm.encode_prompts(["x" * 100], gen_length=8)
    assert ids.shape == (1, 24) and am.all()
    assert ids[0, -1] == lm.profile.sep_id  # the end of the prompt is kept
    assert "cut from the left" in caplog.text


@pytest.mark.parametrize(
    "spec,msg",
    [("/no/such/dir", "does not exist"), ("./rel/missing", "does not exist"), ("llada", "unknown model")],
)
def test_bad_model_specs_say_what_to_do(spec, msg):
    with pytest.raises(UserError, match=msg):
        load_model(spec)


def test_folder_without_config_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="no config.json"):
        load_model(str(tmp_path))


def test_new_tiny_is_deterministic_and_leaves_global_rng_alone():
    state = torch.random.get_rng_state()
    a, b = new_tiny(5, d_model=16, n_layers=1, n_heads=1), new_tiny(5, d_model=16, n_layers=1, n_heads=1)
    assert torch.equal(torch.random.get_rng_state(), state)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)
    assert json.loads(a.module.config.to_json_string())["model_type"] == "lfpo_tiny_dlm"
