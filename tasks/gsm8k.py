"""GSM8K (Cobbe et al. 2021): grade-school maths word problems, test 1319 / train 7473.

Score: 1 if the final number equals the gold answer (the text after ``#### ``). The prediction is read
from the last ``\\boxed{}``, else the last ``<answer>`` block, else the last number in the completion;
commas, currency signs and trailing periods are ignored and numbers compare exactly as fractions
(``1,000`` == ``1000.0``). Validation = the last 500 training problems, never trained on.
"""

from __future__ import annotations

import re
from fractions import Fraction

from lfpo_bench.data import hf_source, load_split, require
from lfpo_bench.registry import TASKS
from lfpo_bench.task import LLADA_TRAIN, Task
from lfpo_bench.types import Example

NUM = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?")
N_VAL = 500


def _boxed(text: str) -> str | None:
    """Content of the last \\boxed{...}, with balanced braces."""
    i = text.rfind("\\boxed{")
    if i < 0:
        return None
    depth, j = 0, i + len("\\boxed{") - 1
    for k in range(j, len(text)):
        if text[k] == "{":
            depth += 1
        elif text[k] == "}":
            depth -= 1
            if depth == 0:
                return text[j + 1 : k]
    return text[j + 1 :]


def to_number(s: str) -> Fraction | None:
    s = s.replace(",", "").replace("$", "").strip().rstrip(".")
    m = NUM.search(s)
    if not m:
        return None
    try:
        return Fraction(m.group(0).replace(",", ""))
    except (ValueError, ZeroDivisionError):
        return None


def extract_answer(completion: str) -> Fraction | None:
    box = _boxed(completion)
    if box is not None:
        return to_number(box)
    tags = re.findall(r"<answer>(.*?)(?:</answer>|$)", completion, re.S)
    if tags:
        return to_number(tags[-1])
    nums = NUM.findall(completion.replace("$", ""))
    return to_number(nums[-1]) if nums else None


@TASKS.register("gsm8k")
class GSM8K(Task):
    name = "gsm8k"
    description = "GSM8K test 1319; numeric answer from \\boxed{}, <answer> or the last number"
    source = "HF openai/gsm8k (main)"
    default_model = "GSAI-ML/LLaDA-8B-Instruct"
    train_defaults = LLADA_TRAIN
    tiny_pretrain = "countdown3-mini"
    gen_length = 256
    steps = 128
    block_length = 32

    def _records(self, hf_split: str) -> list[dict]:
        name = {"test": "gsm8k_test.jsonl", "train": "gsm8k_train.jsonl"}[hf_split]
        loaded = load_split(self.name, hf_split, local_name=name, source=hf_source("openai/gsm8k", "main", hf_split),
                            data_path=self.data_path if hf_split == "test" else None)
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

    def prompt(self, ex: Example, style: str = "chat") -> str:
        if style == "compact":
            return ex.question
        return ex.question + "\nSolve the problem step by step. Put the final numerical answer in \\boxed{}."

    def extract(self, completion: str):
        return extract_answer(completion)

    def score(self, ex: Example, completion: str) -> float:
        pred = extract_answer(completion)
        return float(pred is not None and pred == to_number(ex.answer["gold"]))

    def sft_target(self, ex: Example) -> str:
        steps = ex.answer["solution"].split("####")[0].strip()
        return f"{steps}\nThe answer is \\boxed{{{ex.answer['gold']}}}."
