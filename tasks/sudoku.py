"""4x4 Sudoku in d1's format: 16-character strings, row-major, '0' for an empty cell.

Two tasks share the code:

- ``sudoku4``, the embedded default: puzzles generated from the 288 valid grids. The grids are split by
  *solution* (fixed seed): 200 train, 44 validation, 44 test, so no validation or test solution is ever
  trained on. Every generated puzzle has 6-10 blanks and a unique solution. Runs on the tiny model.
- ``sudoku``, the reference papers' benchmark for LLaDA: test = SPG's leak-free split (256 puzzles,
  solution-disjoint from SPG's train grids), ``test_d1`` = d1's 256 puzzles sampled with seed 42 from its
  500 (which share solution grids with d1's training puzzles). Train/validation puzzles are generated from
  grids that are not solutions of any test puzzle.

Score = cell accuracy over the blank cells against the stored solution (the papers' "accuracy" and the RL
reward), except that any *valid* solution (complete, rows/columns/boxes permutations of 1-4, givens kept)
scores 1: 63 of d1's 256 test puzzles have several solutions, and a valid alternative is not wrong.
Metrics: ``solved`` = a valid solution; ``matches_reference`` = exactly the stored solution (what the
papers count as solved). The answer is read by the shared rule of ``lfpo_bench/answers.py`` (last
non-empty ``\\boxed{}`` or ``<answer>`` block).
"""

from __future__ import annotations

import itertools
import random
import re
from functools import lru_cache

from lfpo_bench.answers import final_answer
from lfpo_bench.data import load_split, require, url_source
from lfpo_bench.registry import TASKS
from lfpo_bench.task import Task
from lfpo_bench.types import Example, UserError

D1_TEST_URL = "https://raw.githubusercontent.com/dllm-reasoning/d1/main/dataset/4x4_test_sudoku.csv"
SPG_TEST_URL = "https://raw.githubusercontent.com/facebookresearch/SPG/main/dataset/test_sudoku_split_new.csv"
SPLIT_SEED = 20260101  # fixes the grid split and the validation/test puzzles; never the user's seed


@lru_cache(maxsize=1)
def all_grids() -> tuple[str, ...]:
    """All 288 valid 4x4 Sudoku grids as 16-char strings, in lexicographic order."""
    out = []
    perms = list(itertools.permutations("1234"))
    for rows in itertools.product(perms, repeat=4):
        cols_ok = all(len({r[c] for r in rows}) == 4 for c in range(4))
        if not cols_ok:
            continue
        boxes_ok = all(
            len({rows[r][c] for r in (br, br + 1) for c in (bc, bc + 1)}) == 4 for br in (0, 2) for bc in (0, 2)
        )
        if boxes_ok:
            out.append("".join("".join(r) for r in rows))
    return tuple(sorted(out))


@lru_cache(maxsize=1)
def _cell_bits() -> dict[tuple[int, str], int]:
    """(cell, digit) -> bitset over all_grids() of the grids holding that digit in that cell."""
    bits: dict[tuple[int, str], int] = {}
    for gi, g in enumerate(all_grids()):
        for c, d in enumerate(g):
            bits[(c, d)] = bits.get((c, d), 0) | (1 << gi)
    return bits


@lru_cache(maxsize=1)
def _valid_grids() -> frozenset[str]:
    return frozenset(all_grids())


def n_solutions(puzzle: str) -> int:
    """How many valid grids agree with the puzzle's given cells."""
    bits = _cell_bits()
    alive = (1 << len(all_grids())) - 1
    for c, d in enumerate(puzzle):
        if d != "0":
            alive &= bits.get((c, d), 0)
    return bin(alive).count("1")


def make_puzzle(grid: str, blanks: int, rng: random.Random, max_tries: int = 50) -> str | None:
    """Blank ``blanks`` cells of ``grid`` so that the solution stays unique; None if no such puzzle found."""
    for _ in range(max_tries):
        order = list(range(16))
        rng.shuffle(order)
        cells = list(grid)
        removed = 0
        for pos in order:
            keep = cells[pos]
            cells[pos] = "0"
            if n_solutions("".join(cells)) == 1:
                removed += 1
                if removed == blanks:
                    return "".join(cells)
            else:
                cells[pos] = keep
    return None


def grid_split() -> dict[str, list[str]]:
    grids = list(all_grids())
    random.Random(SPLIT_SEED).shuffle(grids)
    return {"train": grids[:200], "validation": grids[200:244], "test": grids[244:]}


def generate_puzzles(grids: list[str], n: int, seed: int, distinct: bool = False) -> list[tuple[str, str]]:
    """``n`` puzzles of ``grids``; ``distinct``: each puzzle once (a held-out split is a set: a repeat would count
    one answer twice). The draws up to a first repeat are the same either way."""
    rng = random.Random(seed)
    out, seen = [], set()
    while len(out) < n:
        g = rng.choice(grids)
        p = make_puzzle(g, rng.randint(6, 10), rng)
        if p is not None and not (distinct and p in seen):
            out.append((p, g))
            seen.add(p)
    return out


class _SudokuBase(Task):
    family = "sudoku"
    gen_length = 16
    steps = 16
    block_length = 16

    def _example(self, i: int, puzzle: str, solution: str, prefix: str) -> Example:
        if not (len(puzzle) == 16 and len(solution) == 16 and set(solution) <= set("1234")):
            raise UserError(f"{self.name}: record {i} is not a 4x4 Sudoku in d1 format (16 chars, '0' = empty)")
        return Example(id=f"{prefix}{i}", question=puzzle, answer=solution)

    def instructed(self, ex: Example) -> str:
        rows = "\n".join(ex.question[r * 4 : r * 4 + 4] for r in range(4))
        return (
            "Solve this 4x4 Sudoku. Each row, each column and each 2x2 box must contain the digits 1-4 exactly "
            "once. Empty cells are written as 0. The grid, row by row:\n"
            f"{rows}\n"
            "Think briefly, then give the completed grid as 16 digits, row by row, inside <answer></answer>."
        )

    def extract(self, completion: str) -> str:
        """The first 16 digits of the final answer (``lfpo_bench.answers``: the last non-empty ``\\boxed{}``,
        else the last non-empty ``<answer>`` block), or of the whole text when there is none."""
        block = final_answer(completion)
        text = block if block is not None else completion
        digits = re.findall(r"[0-9]", text)
        return "".join(digits[:16]).ljust(16, "0")

    def _cells(self, ex: Example, completion: str) -> tuple[int, int, bool, bool]:
        """(right blanks, blanks, valid, equals the stored solution). A valid grid - complete, every row,
        column and box a permutation of 1-4, every given kept - is right in every cell even where it
        differs from the stored solution (63 of d1's 256 test puzzles have several solutions)."""
        pred = self.extract(completion)
        blanks = [i for i, c in enumerate(ex.question) if c == "0"]
        valid = pred in _valid_grids() and all(q == "0" or q == p for q, p in zip(ex.question, pred))
        right = len(blanks) if valid else sum(pred[i] == ex.answer[i] for i in blanks)
        return right, len(blanks), valid, pred == ex.answer

    def score(self, ex: Example, completion: str) -> float:
        right, n, _, _ = self._cells(ex, completion)
        return right / n if n else 1.0

    def metrics(self, ex: Example, completion: str) -> dict[str, float]:
        _, _, valid, same = self._cells(ex, completion)
        # the score (= reward) is the cell accuracy, 1 for any valid solution; `solved` = a valid solution;
        # `matches_reference` = the stored solution itself (what d1/SPG count)
        return {"solved": float(valid), "matches_reference": float(same)}

    def sft_target(self, ex: Example) -> str:
        return ex.answer


@TASKS.register("sudoku4")
class Sudoku4(_SudokuBase):
    description = "4x4 Sudoku, generated; split by solution grid (embedded default)"
    source = "generated from the 288 grids (200/44/44 split by solution)"
    synthetic = True
    tiny_pretrain = "sudoku4"
    splits = ("train", "validation", "test", "test_d1", "test_spg")
    eval_steps = (1, 2, 4, 8, 16)
    sizes = {"train": 20000, "validation": 200, "test": 400}
    # RL preset for the tiny model (see CALIBRATION): 8-step rollouts, 16 prompts x G=8 per update
    rollout_steps = 8  # RL rollouts at half the canvas

    def _load(self, split: str) -> list[Example]:
        if split in ("test_d1", "test_spg"):
            return Sudoku(self.data_path).load({"test_d1": "test_d1", "test_spg": "test"}[split])
        if split == "test" and self.data_path:
            # a d1/SPG-format file given by path; its solutions may overlap the tiny model's training grids
            return Sudoku(self.data_path).records_as_examples(self.data_path, split)
        grids = grid_split()[split]
        seed = SPLIT_SEED + {"train": 1, "validation": 2, "test": 3}[split]
        puzzles = generate_puzzles(grids, self.sizes[split], seed, distinct=split != "train")
        return [self._example(i, p, g, f"{split}/") for i, (p, g) in enumerate(puzzles)]


@TASKS.register("sudoku")
class Sudoku(_SudokuBase):
    description = "4x4 Sudoku as in d1/SPG (LLaDA prompts); test = SPG leak-free split, test_d1 = d1's 256"
    source = "SPG test_sudoku_split_new.csv; d1 4x4_test_sudoku.csv (GitHub)"
    default_model = "GSAI-ML/LLaDA-8B-Instruct"
    tiny_pretrain = "sudoku4"
    splits = ("train", "validation", "test", "test_d1")
    gen_length = 256
    steps = 128
    block_length = 32

    def _file(self, split: str) -> list[dict]:
        name, url = {
            "test": ("sudoku_4x4_test_split_new.jsonl", SPG_TEST_URL),
            "test_d1": ("sudoku_4x4_test.jsonl", D1_TEST_URL),
        }[split]
        loaded = load_split(self.name, split, local_name=name, source=url_source(url, "csv"), data_path=self.data_for(split))
        for i, r in enumerate(loaded.records):
            require(r, ("Puzzle", "Solution"), f"{loaded.origin} record {i + 1}")
        return loaded.records

    def records_as_examples(self, path: str, split: str) -> list[Example]:
        """Every puzzle of a d1/SPG-format file, in file order."""
        loaded = load_split(self.name, split, local_name=None, source=None, data_path=path)
        for i, r in enumerate(loaded.records):
            require(r, ("Puzzle", "Solution"), f"{loaded.origin} record {i + 1}")
        return [self._example(i, str(r["Puzzle"]).zfill(16), str(r["Solution"]), "file/") for i, r in enumerate(loaded.records)]

    def _load(self, split: str) -> list[Example]:
        if split in ("train", "validation"):
            used = {r["Solution"] for r in self._file("test")}
            grids = [g for g in all_grids() if g not in used]
            n = {"train": 20000, "validation": 200}[split]
            seed = SPLIT_SEED + {"train": 11, "validation": 12}[split]
            puzzles = generate_puzzles(grids, n, seed, distinct=split != "train")
            return [self._example(i, p, g, f"{split}/") for i, (p, g) in enumerate(puzzles)]
        recs = self._file(split)
        if split == "test_d1":
            import numpy as np

            # d1's eval/sudoku.py: init_seed(42) then np.random.choice(500, 256, replace=False)
            idx = np.random.RandomState(42).choice(len(recs), 256, replace=False) if len(recs) == 500 else range(len(recs))
            return [self._example(int(i), str(recs[int(i)]["Puzzle"]).zfill(16), str(recs[int(i)]["Solution"]), "test_d1/") for i in idx]
        return [self._example(i, str(r["Puzzle"]).zfill(16), str(r["Solution"]), f"{split}/") for i, r in enumerate(recs)]
