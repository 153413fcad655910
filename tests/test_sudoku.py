"""sudoku4 / sudoku: grid enumeration, leak-free split, unique puzzles, extraction and scoring, d1/SPG files."""

import pytest
from lfpo_bench.tasks.sudoku import Sudoku, Sudoku4, all_grids, grid_split, n_solutions

from lfpo_bench.types import Example, UserError


def _valid(g: str) -> bool:
    rows = [g[i * 4 : i * 4 + 4] for i in range(4)]
    cols = ["".join(r[c] for r in rows) for c in range(4)]
    boxes = ["".join(rows[r][c] for r in (br, br + 1) for c in (bc, bc + 1)) for br in (0, 2) for bc in (0, 2)]
    return all(sorted(u) == list("1234") for u in rows + cols + boxes)


def test_there_are_288_valid_grids_and_all_are_valid():
    grids = all_grids()
    assert len(grids) == 288 == len(set(grids))
    assert all(_valid(g) for g in grids)


def test_split_is_by_solution_grid_and_disjoint():
    s = grid_split()
    assert [len(s[k]) for k in ("train", "validation", "test")] == [200, 44, 44]
    assert not (set(s["train"]) & set(s["test"])) and not (set(s["train"]) & set(s["validation"]))
    task = Sudoku4()
    train_solutions = {e.answer for e in task.load("train")}
    assert not train_solutions & {e.answer for e in task.load("test")}
    assert not train_solutions & {e.answer for e in task.load("validation")}


def test_generated_puzzles_are_unique_consistent_and_have_6_to_10_blanks():
    for e in Sudoku4().load("test"):
        assert 6 <= e.question.count("0") <= 10
        assert n_solutions(e.question) == 1
        assert all(p in ("0", s) for p, s in zip(e.question, e.answer))


def test_load_is_deterministic_and_hashed():
    a_ex, a_sha = Sudoku4().load_with_hash("validation")
    b_ex, b_sha = Sudoku4().load_with_hash("validation")
    assert a_sha == b_sha and [e.question for e in a_ex] == [e.question for e in b_ex]
    assert Sudoku4().load_with_hash("test")[1] != a_sha


def test_score_is_cell_accuracy_over_blanks_and_solved_is_all_blanks_right():
    ex = Example("x", question="0234341221434321", answer="1234341221434321")
    t = Sudoku4()
    assert t.score(ex, "1234341221434321") == 1.0
    assert t.metrics(ex, "1234341221434321") == {"solved": 1.0, "matches_reference": 1.0}
    ex2 = Example("y", question="0034341221434320", answer="1234341221434321")
    # blanks at 0, 1, 15; fill 1 right, 2 wrong
    assert t.score(ex2, "1434341221434324") == pytest.approx(1 / 3)
    assert t.metrics(ex2, "1434341221434324")["solved"] == 0.0


def test_extract_reads_the_answer_tag_or_the_first_16_digits():
    t = Sudoku4()
    assert t.extract("blah 12 <answer>\n1234\n3412\n2143\n4321</answer>") == "1234341221434321"
    assert t.extract("1234 3412 2143 4321 and more 9999") == "1234341221434321"
    assert t.extract("12") == "12" + "0" * 14  # too short: padded with empties, scored wrong


def test_compact_prompt_is_the_puzzle_and_chat_prompt_has_instructions():
    ex = Sudoku4().load("test")[0]
    assert Sudoku4().prompt(ex, "compact") == ex.question
    assert "<answer>" in Sudoku4().prompt(ex, "chat")


def test_d1_and_spg_test_files_load_from_a_local_folder(shared_data, monkeypatch):
    monkeypatch.setenv("LFPO_BENCH_DATA_DIR", str(shared_data))
    spg = Sudoku().load("test")
    d1 = Sudoku().load("test_d1")
    assert len(spg) == 256 and len(d1) == 256
    for e in spg + d1:
        assert len(e.question) == 16 and set(e.answer) <= set("1234") and _valid(e.answer)
        assert all(p in ("0", s) for p, s in zip(e.question, e.answer))
    # train puzzles never use a test solution grid
    assert not {e.answer for e in Sudoku().load("train")} & {e.answer for e in spg}


def test_sudoku4_test_split_can_be_read_from_a_d1_file(shared_data):
    exs = Sudoku4(data_path=str(shared_data / "sudoku_4x4_test.jsonl")).load("test")
    assert len(exs) == 500 and exs[0].question == exs[0].question.zfill(16)


def test_malformed_record_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"Puzzle": "0234341221434321", "Solution": "1234341221434321"}\n{"Puzzle": oops}\n')
    with pytest.raises(UserError, match=r"bad.jsonl:2: malformed JSON"):
        Sudoku(data_path=str(bad)).load("test")


def test_wrong_schema_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"puzzle": "0234341221434321"}\n')
    with pytest.raises(UserError, match="missing field"):
        Sudoku(data_path=str(bad)).load("test")


def test_a_valid_alternative_solution_scores_one_and_is_solved():
    """Puzzles with several solutions: any valid grid that keeps the givens is right; an invalid grid is
    scored cell by cell against the stored solution, and a valid grid that changes a given is not valid."""
    from lfpo_bench.tasks.sudoku import all_grids, n_solutions

    t = Sudoku4()
    grids = all_grids()
    # a puzzle with exactly two solutions: blank cells until two grids fit
    a = grids[0]
    puzzle = None
    for mask in range(1, 1 << 16):
        cells = [("0" if mask >> i & 1 else c) for i, c in enumerate(a)]
        if n_solutions("".join(cells)) == 2:
            puzzle = "".join(cells)
            break
    assert puzzle is not None
    other = next(g for g in grids if g != a and all(q == "0" or q == c for q, c in zip(puzzle, g)))
    ex = Example("m", question=puzzle, answer=a)
    assert t.score(ex, f"<answer>{other}</answer>") == 1.0
    assert t.metrics(ex, f"<answer>{other}</answer>") == {"solved": 1.0, "matches_reference": 0.0}
    assert t.metrics(ex, f"<answer>{a}</answer>") == {"solved": 1.0, "matches_reference": 1.0}
    # a valid grid that contradicts a given is neither solved nor fully right
    given = next(i for i, q in enumerate(puzzle) if q != "0")
    wrong = next(g for g in grids if g[given] != a[given])
    assert t.metrics(ex, wrong)["solved"] == 0.0 and t.score(ex, wrong) < 1.0
