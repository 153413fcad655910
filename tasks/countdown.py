"""Countdown: combine the given numbers with + - * / to reach the target, each number used exactly once.

- ``countdown``: d1's 3-number test set (256 records, ``input`` "a,b,c" and ``output`` target); training
  problems are generated (numbers 1-99, targets reachable by construction).
- ``countdown3-mini``: three numbers 1-9 and + - *, small enough for the tiny model; synthetic, with the
  expression space split between train and held-out splits.

Score: 1 if the expression uses each given number exactly once and evaluates exactly to the target,
else 0. Expressions are evaluated by a small AST walker over exact fractions (never ``eval``).
"""

from __future__ import annotations

import ast
import itertools
import random
import re
from collections import Counter
from fractions import Fraction

from lfpo_bench.answers import final_answer
from lfpo_bench.data import load_split, require, url_source
from lfpo_bench.registry import TASKS
from lfpo_bench.task import Task
from lfpo_bench.types import Example

D1_URL = "https://raw.githubusercontent.com/dllm-reasoning/d1/main/dataset/countdown_cd3_test.jsonl"
_OPS_TEXT = str.maketrans({"×": "*", "÷": "/", "\u2212": "-", "\u2013": "-"})
_OPS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b, ast.Div: lambda a, b: a / b}


class BadExpression(ValueError):
    pass


def evaluate(expr: str) -> tuple[Fraction, list[int]]:
    """Exact value and the integer literals of an arithmetic expression (+ - * / and parentheses only)."""
    if len(expr) > 200:
        raise BadExpression("expression too long")
    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except SyntaxError as e:
        raise BadExpression(str(e)) from None
    nums: list[int] = []

    def walk(n) -> Fraction:
        if isinstance(n, ast.BinOp) and type(n.op) in _OPS:
            a, b = walk(n.left), walk(n.right)
            if isinstance(n.op, ast.Div) and b == 0:
                raise BadExpression("division by zero")
            return _OPS[type(n.op)](a, b)
        if isinstance(n, ast.UnaryOp) and isinstance(n.op, (ast.USub, ast.UAdd)):
            v = walk(n.operand)
            return -v if isinstance(n.op, ast.USub) else v
        if isinstance(n, ast.Constant) and type(n.value) is int:
            nums.append(n.value)
            return Fraction(n.value)
        raise BadExpression(f"not allowed: {type(n).__name__}")

    return walk(tree.body), nums


def check_expression(expr: str, numbers: list[int], target: int) -> bool:
    try:
        value, used = evaluate(expr)
    except BadExpression:
        return False
    return Counter(used) == Counter(numbers) and value == target


class _Countdown(Task):
    family = "countdown"
    def problem(self, ex: Example) -> str:
        return ",".join(map(str, ex.answer["numbers"])) + ">" + str(ex.answer["target"])

    def instructed(self, ex: Example) -> str:
        nums, target = ex.answer["numbers"], ex.answer["target"]
        return (f"Using the numbers {nums}, create an equation that equals {target}. You can use + - * / and "
                "parentheses, and each number exactly once. Think step by step, then give only the equation "
                "inside <answer></answer>, e.g. <answer>(1 + 2) * 3</answer>.")

    def extract(self, completion: str) -> str:
        """The final answer (``lfpo_bench.answers``: last non-empty ``\\boxed{}``, else last non-empty
        ``<answer>``), else the first line of the completion. Of an equation (``(1+2)*3 = 9`` or
        ``9 = (1+2)*3``) the first side that is not a bare number is the expression; ``\\times``, ``\\cdot``,
        ``\\div``, ``×``, ``÷`` and the Unicode minus are read as operators."""
        block = final_answer(completion)
        text = block if block is not None else (completion.strip().split("\n") or [""])[0]
        text = text.translate(_OPS_TEXT)
        for latex, op in (("\\times", "*"), ("\\cdot", "*"), ("\\div", "/"), ("\\left", ""), ("\\right", ""), ("$", "")):
            text = text.replace(latex, op)
        sides = [p.strip() for p in text.split("=")]
        return next((p for p in sides if p and not re.fullmatch(r"-?\d+(?:\.\d+)?", p)), sides[0])

    def score(self, ex: Example, completion: str) -> float:
        return float(check_expression(self.extract(completion), ex.answer["numbers"], ex.answer["target"]))


def random_expression(nums: list[int], ops: str, rng: random.Random) -> str:
    """A random expression over a permutation of three numbers, in one of three groupings."""
    a, b, c = rng.sample(nums, 3)
    o1, o2 = rng.choice(ops), rng.choice(ops)
    return rng.choice([f"{a}{o1}{b}{o2}{c}", f"({a}{o1}{b}){o2}{c}", f"{a}{o1}({b}{o2}{c})"])


@TASKS.register("countdown")
class Countdown(_Countdown):
    description = "Countdown with 3 numbers (d1 test set, 256); train problems generated"
    source = "d1 countdown_cd3_test.jsonl (GitHub)"
    default_model = "GSAI-ML/LLaDA-8B-Instruct"
    tiny_pretrain = "countdown3-mini"
    gen_length = 256
    steps = 128
    block_length = 32

    def _load(self, split: str) -> list[Example]:
        if split == "test":
            loaded = load_split(self.name, split, local_name="countdown_cd3_test.jsonl", source=url_source(D1_URL),
                                data_path=self.data_path)
            out = []
            for i, r in enumerate(loaded.records):
                require(r, ("input", "output"), f"{loaded.origin} record {i + 1}")
                nums = [int(x) for x in str(r["input"]).split(",")]
                out.append(Example(f"test/{i}", r["input"], {"numbers": nums, "target": int(r["output"])}))
            return out
        rng = random.Random({"train": 101, "validation": 102}[split])
        n = {"train": 20000, "validation": 200}[split]
        out = []
        while len(out) < n:
            nums = [rng.randint(1, 99) for _ in range(3)]
            expr = random_expression(nums, "+-*/", rng)
            try:
                v = evaluate(expr)[0]
            except BadExpression:
                continue
            if v.denominator == 1 and 0 < v < 1000:
                out.append(Example(f"{split}/{len(out)}", ",".join(map(str, nums)), {"numbers": nums, "target": int(v), "expr": expr}))
        return out

    def sft_target(self, ex: Example) -> str:
        return f"<answer>{ex.answer['expr']}</answer>"


@TASKS.register("countdown3-mini")
class CountdownMini(_Countdown):
    description = "Countdown, 3 numbers 1-9 with + - * (tiny-model scale, synthetic)"
    source = "generated; held-out splits use unseen number triples, each problem once"
    synthetic = True
    tiny_pretrain = "countdown3-mini"
    gen_length = 8
    steps = 8
    block_length = 8
    eval_steps = (1, 2, 4, 8)
    rollout_steps = 4  # RL rollouts at half the canvas

    def _load(self, split: str) -> list[Example]:
        triples = sorted(itertools.combinations_with_replacement(range(1, 10), 3))
        random.Random(7).shuffle(triples)
        held = {"validation": triples[:20], "test": triples[20:40]}
        pool = held.get(split) or triples[40:]
        rng = random.Random({"train": 1, "validation": 2, "test": 3}[split])
        n = {"train": 20000, "validation": 200, "test": 400}[split]
        out, seen = [], set()
        while len(out) < n:
            nums = list(rng.choice(pool))
            rng.shuffle(nums)
            o1, o2 = rng.choice("+-*"), rng.choice("+-*")
            expr = f"{nums[0]}{o1}{nums[1]}{o2}{nums[2]}"
            target = int(evaluate(expr)[0])
            if split != "train":  # a held-out split is a set: a repeated problem would count one answer twice
                if (tuple(nums), target) in seen:  # (its test pool has 584 distinct problems for 400 draws)
                    continue
                seen.add((tuple(nums), target))
            out.append(Example(f"{split}/{len(out)}", ",".join(map(str, nums)), {"numbers": nums, "target": target, "expr": expr}))
        return out

    def sft_target(self, ex: Example) -> str:
        return ex.answer["expr"]
