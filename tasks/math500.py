"""MATH-500 (Lightman et al. 2023's subset of MATH): 500 competition problems.

Score: math-verify's ``verify(parse(gold), parse(prediction))`` (gold first), which handles \\boxed{},
fractions vs decimals, equivalent expressions, intervals and sets. math-verify's own timeouts use
``signal.alarm`` and fail outside the main thread, so they are disabled and every check runs in a
worker process with our own timeout (a hung check scores 0 and its worker is replaced).
Training problems: MATH train, from the HF hub (no local file is shipped).
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
from concurrent.futures.process import BrokenProcessPool

from lfpo_bench.data import hf_source, load_split, require
from lfpo_bench.registry import TASKS
from lfpo_bench.task import Scored, Task
from lfpo_bench.types import Example, UserError


class ScorerError(UserError):
    """The scorer cannot score (not: the answer is wrong)."""

TIMEOUT_S = 5.0


def _verify(gold: str, pred: str) -> bool:
    import logging

    from math_verify import parse, verify

    logging.getLogger("math_verify").setLevel(logging.ERROR)  # "timeout disabled" notes: we time out ourselves
    g = parse(f"${gold}$", parsing_timeout=None)
    p = parse(pred, parsing_timeout=None)
    return bool(verify(g, p, timeout_seconds=None))


class _Verifier:
    """A small process pool for math-verify with per-call timeouts."""

    def __init__(self, workers: int = 2):
        self.workers = workers
        self.pool: cf.ProcessPoolExecutor | None = None

    def _kill(self) -> None:
        if self.pool is not None:
            for proc in list(getattr(self.pool, "_processes", {}).values()):
                proc.kill()
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool = None
        self._ok = False

    def check_many(self, pairs: list[tuple[str, str]]) -> list[bool]:
        """One verdict per (gold, prediction). A check that hangs or whose parse fails scores 0; a pool that
        cannot run checks at all (workers die at start, math-verify missing) raises ``ScorerError``: a scorer
        that cannot score never returns zeros."""
        if pairs:
            self._selftest()
        out: list[bool] = []
        while len(out) < len(pairs):
            if self.pool is None:
                self.pool = cf.ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn"))
            futs = [self.pool.submit(_verify, g, p) for g, p in pairs[len(out):]]
            for f in futs:
                try:
                    out.append(bool(f.result(timeout=TIMEOUT_S)))
                except cf.TimeoutError:
                    out.append(False)  # a hung check scores 0; restart the pool for the rest
                    self._kill()
                    break
                except BrokenProcessPool as e:
                    self._kill()
                    raise ScorerError(f"math500: the math-verify worker pool died ({e}); no answer was scored") from None
                except Exception:  # noqa: BLE001 - a parse failure scores 0
                    out.append(False)
        return out

    def _selftest(self) -> None:
        """Once per pool: a known-equal pair must verify, or the pool cannot score (raises)."""
        if getattr(self, "_ok", False) and self.pool is not None:
            return
        if self.pool is None:
            self.pool = cf.ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn"))
        try:
            ok = self.pool.submit(_verify, "\\frac{1}{2}", "$\\boxed{0.5}$").result(timeout=120)
        except Exception as e:  # noqa: BLE001 - whatever stops the pool, it cannot score
            self._kill()
            raise ScorerError(f"math500: math-verify cannot run in a worker process ({type(e).__name__}: {e}). "
                              "Install it with `pip install 'lfpo-bench[eval]'`; when scoring from a script, "
                              "guard it with `if __name__ == '__main__':` (workers are spawned)") from None
        if not ok:
            self._kill()
            raise ScorerError("math500: math-verify does not verify 1/2 == 0.5 in its worker; no answer was scored")
        self._ok = True


_VERIFIER = _Verifier()


@TASKS.register("math500")
class MATH500(Task):
    family = "math"
    description = "MATH-500; math-verify equivalence, in worker processes with a timeout"
    source = "HF HuggingFaceH4/MATH-500"
    default_model = "GSAI-ML/LLaDA-8B-Instruct"
    tiny_pretrain = "countdown3-mini"
    splits = ("train", "validation", "test")
    gen_length = 256
    steps = 128
    block_length = 32

    def _load(self, split: str) -> list[Example]:
        if split == "test":
            loaded = load_split(self.name, split, local_name="math500_test.jsonl", source=hf_source("HuggingFaceH4/MATH-500", None, "test"),
                                data_path=self.data_for(split))
            recs = loaded.records
        else:
            loaded = load_split(self.name, "train", local_name="math_train.jsonl", source=hf_source("EleutherAI/hendrycks_math", "algebra", "train"), data_path=self.data_for("train"))
            recs = loaded.records[:-200] if split == "train" else loaded.records[-200:]
        out = []
        for i, r in enumerate(recs):
            require(r, ("problem",), f"{loaded.origin} record {i + 1}")
            gold = r.get("answer") or _boxed_of(r.get("solution", ""))
            out.append(Example(r.get("unique_id", f"{split}/{i}"), r["problem"], {"gold": gold, "solution": r.get("solution", "")}))
        return out

    def instructed(self, ex: Example) -> str:
        return ex.question + "\nSolve step by step and put the final answer in \\boxed{}."

    def extract(self, completion: str) -> str:
        return completion

    def score_batch(self, examples, completions):
        ok = _VERIFIER.check_many([(e.answer["gold"], c) for e, c in zip(examples, completions)])
        return [Scored(float(v), {}) for v in ok]

    def score(self, ex: Example, completion: str) -> float:
        return self.score_batch([ex], [completion])[0].score


def _boxed_of(solution: str) -> str:
    from lfpo_bench.answers import last_boxed

    return last_boxed(solution) or ""
