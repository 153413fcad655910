"""MBPP (Austin et al. 2021) and MBPP+ (evalplus v0.2.0).

MBPP splits by task_id, as upstream: prompt 1-10, test 11-510, validation 511-600, train 601-974.
Score: 1 if every assert line passes (set-up code runs in the candidate's namespace). MBPP+: base and plus
inputs against the canonical outputs with evalplus's rules; its train/validation splits are MBPP's minus
every task in MBPP+ (MBPP+ draws tasks from all of MBPP, train range included).
"""

from __future__ import annotations

from lfpo_bench.code_task import CodeTask
from lfpo_bench.codeexec import defined_names, extract_code, mbpp_check, plus_check, sanitize
from lfpo_bench.data import load_split, require, url_source
from lfpo_bench.registry import TASKS
from lfpo_bench.sandbox import Job
from lfpo_bench.types import Example

MBPP_URL = "https://raw.githubusercontent.com/google-research/google-research/master/mbpp/mbpp.jsonl"
PLUS_URL = "https://github.com/evalplus/mbppplus_release/releases/download/v0.2.0/MbppPlus.jsonl.gz"
RANGES = {"prompt": (1, 10), "test": (11, 510), "validation": (511, 600), "train": (601, 974)}


def _tuples(xs):
    return [tuple(x) for x in xs]


def _deep_tuple(x):
    return tuple(_deep_tuple(i) for i in x) if isinstance(x, list) else x


# MBPP+ stores inputs as JSON, which has no tuples, sets or complex numbers. These are the tasks whose
# arguments must be rebuilt, and how (the same rebuilding evalplus applies when it loads MBPP+ v0.2.0).
_REBUILD: list[tuple[set[int], object]] = [
    ({2, 116, 132, 143, 222, 261, 273, 394, 399, 421, 424, 429, 470, 560, 579, 596, 616, 630, 726, 740, 744, 809},
     lambda a: _tuples(a)),  # every argument is a tuple
    ({63, 64, 70, 94, 120, 237, 272, 299, 400, 409, 417, 438, 473, 614, 780},
     lambda a: [_tuples(x) for x in a]),  # every argument is a list of tuples
    ({75, 413, 444, 753}, lambda a: [_tuples(a[0]), a[1]]),  # first argument: list of tuples
    ({106, 750}, lambda a: [a[0], tuple(a[1])]),  # second argument: tuple
    ({115}, lambda a: [[set(i) if isinstance(i, list) and i else {} for i in a[0]]]),  # list of sets ({} when empty)
    ({124}, lambda a: (float(a[0]), complex(a[1]))),
    ({250, 405, 446, 617, 720, 763, 808}, lambda a: [tuple(a[0]), a[1]]),  # first argument: tuple
    ({259, 401, 445}, lambda a: [tuple(_tuples(x)) for x in a]),  # tuples of tuples
    ({278}, lambda a: [tuple(tuple(i) if isinstance(i, list) else i for i in a[0])]),
    ({307}, lambda a: [tuple(a[0]), a[1], a[2]]),
    ({722}, lambda a: [{k: tuple(v) for k, v in a[0].items()}, *a[1:]]),
    ({252}, lambda a: [complex(a[0])]),
    ({580, 615, 791}, _deep_tuple),  # all lists, at any depth, are tuples
]


def plus_inputs(task_id: str, inputs: list) -> list:
    """MBPP+ arguments with their Python types restored (see ``_REBUILD``)."""
    num = int(task_id.split("/")[-1])
    for ids, rebuild in _REBUILD:
        if num in ids:
            return [rebuild(a) for a in inputs]
    return inputs


def mbpp_records(task, data_path) -> list[dict]:
    """All 974 MBPP records (a test-only file also works for the test split)."""
    loaded = load_split("mbpp", "full", local_name="mbpp_full.jsonl", source=url_source(MBPP_URL), data_path=data_path)
    for i, r in enumerate(loaded.records):
        require(r, ("task_id", "text", "code", "test_list"), f"{loaded.origin} record {i + 1}")
    return loaded.records


@TASKS.register("mbpp")
class MBPP(CodeTask):
    description = "MBPP (full) test 11-510: assert lines in the sandbox"
    source = "google-research mbpp.jsonl (HF google-research-datasets/mbpp)"
    default_model = "GSAI-ML/LLaDA-8B-Instruct"
    tiny_pretrain = "toy-code"
    splits = ("train", "validation", "test", "prompt")
    gen_length = 256
    steps = 128
    block_length = 32

    def _load(self, split: str) -> list[Example]:
        lo, hi = RANGES[split]
        recs = [r for r in mbpp_records(self, self.data_path) if lo <= int(r["task_id"]) <= hi]
        return [Example(f"mbpp/{r['task_id']}", r["text"], r, {"split": split}) for r in recs]

    def problem(self, ex: Example) -> str:
        return f'"""{ex.answer["text"]}\n{ex.answer["test_list"][0]}"""\n'

    def instructed(self, ex: Example) -> str:
        tests = "\n".join(ex.answer["test_list"])
        return (f"Write a Python function for this task:\n{ex.answer['text']}\n\nYour code must pass these tests:\n{tests}\n\n"
                "Answer with the code in one ```python code block.")

    def program(self, ex: Example, completion: str) -> str:
        return sanitize(extract_code(completion, names=defined_names(ex.answer.get("code") or "")))

    def job(self, ex: Example, program: str, timeout: float) -> Job:
        return Job(program, mbpp_check(ex.answer), timeout)

    def reference_program(self, ex: Example) -> str:
        return ex.answer["code"]

    def sft_target(self, ex: Example) -> str:
        return f"```python\n{ex.answer['code']}\n```"


@TASKS.register("mbpp_plus")
class MBPPPlus(MBPP):
    description = "MBPP+ (evalplus v0.2.0, 378 tasks): base + plus inputs, differential testing"
    source = "evalplus mbppplus_release v0.2.0"
    splits = ("train", "validation", "test")

    def _load(self, split: str) -> list[Example]:
        if split != "test":
            plus_ids = {int(e.id.split("/")[1]) for e in self.load("test")}
            return [e for e in MBPP().load(split) if int(e.answer["task_id"]) not in plus_ids]
        loaded = load_split(self.name, split, local_name="mbppplus_v0.2.0.jsonl", data_path=self.data_path, source=url_source(PLUS_URL))
        out = []
        for r in loaded.records:
            r = {**r, "base_input": plus_inputs(r["task_id"], r["base_input"]), "plus_input": plus_inputs(r["task_id"], r["plus_input"])}
            out.append(Example(r["task_id"], r["prompt"], r, {"split": split, "plus": True}))
        return out

    def problem(self, ex: Example) -> str:
        return ex.answer["prompt"] if ex.meta.get("plus") else super().problem(ex)

    def instructed(self, ex: Example) -> str:
        if not ex.meta.get("plus"):
            return super().instructed(ex)
        return f"Write a Python function for this task:\n{ex.answer['prompt'].strip()}\n\nAnswer with the code in one ```python code block."

    def program(self, ex: Example, completion: str) -> str:
        if not ex.meta.get("plus"):
            return super().program(ex, completion)
        return sanitize(extract_code(completion, ex.answer["entry_point"]))

    def job(self, ex: Example, program: str, timeout: float) -> Job:
        if not ex.meta.get("plus"):
            return super().job(ex, program, timeout)
        return Job(program, plus_check(ex.answer, self.plus_expected(ex), "mbpp"), timeout)

    def reference_program(self, ex: Example) -> str:
        return ex.answer["canonical_solution"] if ex.meta.get("plus") else super().reference_program(ex)

    def sft_target(self, ex: Example) -> str:
        return f"```python\n{self.reference_program(ex)}\n```"
