"""GSM8K (Cobbe et al. 2021): grade-school maths word problems, test 1319 / train 7473.

Score: 1 if the value of the final answer equals the gold answer (the text after ``#### ``), exactly, as
fractions. The answer is the last non-empty ``\\boxed{}``, else the last non-empty ``<answer>`` block (its
value: the right-most side of an equation, evaluated, LaTeX separators, ``\\frac`` and units understood;
see ``lfpo_bench/answers.py``), else the last number in the completion. Validation = the last 500 training problems, never trained on.
"""

from __future__ import annotations

from fractions import Fraction

from lfpo_bench.answers import final_answer, last_number, numeric_value
from lfpo_bench.data import hf_source, load_split, require
from lfpo_bench.registry import TASKS
from lfpo_bench.task import Task
from lfpo_bench.types import Example

N_VAL = 500


def extract_answer(completion: str) -> Fraction | None:
    """The value of the final answer (``lfpo_bench.answers``): last non-empty ``\\boxed{}``, else last
    non-empty ``<answer>``, else the last number of the text."""
    block = final_answer(completion)
    if block is not None:
        return numeric_value(block)
    return last_number(completion)


@TASKS.register("gsm8k")
class GSM8K(Task):
    family = "math"
    description = "GSM8K test 1319; numeric answer from \\boxed{}, <answer> or the last number"
    source = "HF openai/gsm8k (main)"
    default_model = "GSAI-ML/LLaDA-8B-Instruct"
    tiny_pretrain = "countdown3-mini"
    gen_length = 256
    steps = 128
    block_length = 32

    def _records(self, hf_split: str) -> list[dict]:
        name = {"test": "gsm8k_test.jsonl", "train": "gsm8k_train.jsonl"}[hf_split]
        loaded = load_split(self.name, hf_split, local_name=name, source=hf_source("openai/gsm8k", "main", hf_split),
                            data_path=self.data_for(hf_split))
        for i, r in enumerate(loaded.records):
            require(r, ("question", "answer"), f"{loaded.origin} record {i + 1}")
        return loaded.records

    def _load(self, split: str) -> list[Example]:
        recs = self._records("test" if split == "test" else "train")
        if split == "train":
            recs = recs[:-N_VAL]
        elif split == "validation":
            recs = recs[-N_VAL:]
        out = []
        for i, r in enumerate(recs):
            gold = r["answer"].split("####")[-1].strip()
            out.append(Example(f"{split}/{i}", r["question"], {"gold": gold, "solution": r["answer"]}))
        return out

    def instructed(self, ex: Example) -> str:
        return ex.question + "\nSolve the problem step by step. Put the final numerical answer in \\boxed{}."

    def extract(self, completion: str):
        return extract_answer(completion)

    def score(self, ex: Example, completion: str) -> float:
        pred = extract_answer(completion)
        return float(pred is not None and pred == numeric_value(ex.answer["gold"]))

    def sft_target(self, ex: Example) -> str:
        steps = ex.answer["solution"].split("####")[0].strip()
        return f"{steps}\nThe answer is \\boxed{{{ex.answer['gold']}}}."
