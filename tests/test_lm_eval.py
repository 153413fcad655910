"""The lm-eval adapter: stop strings, the Monte-Carlo loglikelihood by hand, and an offline run of a
GSM8K-style task from a local JSONL with the tiny model."""

import json
import math
import types

import pytest
import torch

pytest.importorskip("lm_eval", reason="needs the `eval` extra: pip install 'lfpo-bench[eval]'")

from lfpo_bench.lm_eval_adapter import LFPODiffusionLM, cut_at  # noqa: E402


def test_cut_at_the_first_stop_string():
    assert cut_at("12\n\nQuestion: next", ["Question:", "\n\n"]) == "12"
    assert cut_at("no stop", ["</s>"]) == "no stop"
    assert cut_at("abc", []) == "abc"


class UniformLM:
    """Logits are all zero: every token has probability 1/V, so log p(any continuation) = -L ln V exactly."""

    V = 50
    mask_id = 1
    device = torch.device("cpu")
    name = "uniform"

    def __init__(self):
        self.tokenizer = lambda text, add_special_tokens=False: {"input_ids": [10 + (ord(c) % 30) for c in text]}

    def __call__(self, x, am=None):
        return torch.zeros(*x.shape, self.V)


def test_mc_loglikelihood_is_exact_for_a_uniform_model():
    adapter = LFPODiffusionLM(lm=UniformLM(), mc_num=16, batch_size=5)
    req = types.SimpleNamespace(args=("context ", "abcd"))
    (ll, greedy), = adapter.loglikelihood([req])
    assert math.isclose(ll, -4 * math.log(50), rel_tol=1e-5)


def test_offline_gsm8k_style_task_from_a_local_jsonl(tmp_path, shared_data):
    from lfpo_bench.lm_eval_adapter import run_lm_eval

    lines = (shared_data / "gsm8k_test.jsonl").read_text().splitlines()[:4]
    data = tmp_path / "test.jsonl"
    data.write_text("\n".join(lines) + "\n")
    (tmp_path / "gsm8k_local.yaml").write_text(f"""task: gsm8k_local
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_target: "{{{{answer.split('####')[-1].strip()}}}}"
generation_kwargs:
  until: ["\\n\\n", "Question:"]
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
""")
    res = run_lm_eval("tiny-random", ["gsm8k_local"], include_path=str(tmp_path),
                      model_args={"gen_length": 8, "steps": 2, "block_length": 8})
    r = res["results"]["gsm8k_local"]
    assert r["exact_match,none"] == 0.0  # an untrained model, honestly
    assert json.dumps(res["results"])  # serialisable
