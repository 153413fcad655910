"""Where a model's final answer is, and what number it names: one rule for every task.

**Which block.** The final answer is the *last non-empty* ``\\boxed{...}`` (balanced braces), else the
*last non-empty* ``<answer>...</answer>`` block (an unclosed final block counts; an echoed empty
``<answer></answer>`` from the prompt never hides the real one), else the task's own fallback (GSM8K: the
last number in the text; Sudoku: the digits of the whole text). Every task in ``tasks/`` uses these two
functions, so the rule cannot differ between tasks.

**What number** (``numeric_value``, GSM8K): the *final value of the expression* in the block. LaTeX and
typography are normalised first: ``\\$``, ``\\%``, ``\\text{...}``/``\\mathrm{...}`` units, ``\\!``/``\\,``/``\\;``
spacing, thin and no-break spaces, ``{,}`` and ``,`` or space thousands separators, the Unicode minus,
``\\dfrac``/``\\tfrac``. If the block holds an equation (``72 + 1 = 73``), the right-most side counts. The
rest must be an arithmetic expression over numbers (``+ - * / ^``, ``\\times``, ``\\cdot``, ``\\div``,
``\\frac{a}{b}``, parentheses), evaluated exactly with fractions, so ``\\frac{144}{2}`` is 72 and
``\\frac{72}{2}`` is not 72. Anything else (two numbers side by side, a variable) has no value and scores 0.
"""

from __future__ import annotations

import ast
import re
from fractions import Fraction

_TAG = {}


def last_boxed(text: str) -> str | None:
    """Content of the last non-empty ``\\boxed{...}`` (or ``\\fbox{...}``), braces balanced; an unclosed box
    at the very end (a truncated generation) counts up to the end of the text."""
    out = None
    for m in re.finditer(r"\\(?:boxed|fbox)\s*\{", text):
        depth, j = 1, m.end()
        k = j
        while k < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[k], 0)
            k += 1
        inner = text[j : k - 1] if depth == 0 else text[j:]
        if inner.strip():
            out = inner
    return out


def last_block(text: str, tag: str = "answer") -> str | None:
    """Content of the last non-empty ``<tag>...</tag>`` block; a final block left open counts."""
    pat = _TAG.get(tag)
    if pat is None:
        pat = _TAG[tag] = re.compile(rf"<{tag}>(.*?)(?:</{tag}>|(?=<{tag}>)|\Z)", re.S)
    blocks = [b for b in pat.findall(text) if b.strip()]
    return blocks[-1] if blocks else None


def final_answer(text: str) -> str | None:
    """The last non-empty ``\\boxed{}``, else the last non-empty ``<answer>`` block, else None."""
    box = last_boxed(text)
    return box if box is not None else last_block(text)


# ---- numbers --------------------------------------------------------------------------------------
_SPACES = dict.fromkeys(map(ord, "\u00a0\u2009\u202f\u2007\u2008\u200a\u200b"), " ")
_DASHES = dict.fromkeys(map(ord, "\u2212\u2012\u2013\u2014\ufe63\uff0d"), "-")
_WRAPPERS = re.compile(r"\\(?:text|textbf|textrm|mathrm|mathbf|mbox|operatorname)\s*\{([^{}]*)\}")
_FRAC = re.compile(r"\\frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}")
_GROUPS = re.compile(r"(?<![\d.])(\d{1,3})((?:[, ]\d{3})+)(?![\d])")
_COMMA_GROUPS = re.compile(r"(?<![\d.])(\d{1,3})((?:,\d{3})+)(?![\d])")
NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:/\d+)?|-?\.\d+")


def normalise(s: str, space_groups: bool = True) -> str:
    """LaTeX and typography to plain arithmetic text (see the module docstring). ``space_groups``: read
    ``1 450 000`` as one number (inside an answer block; not in free text, where it may be two)."""
    s = s.translate(_SPACES).translate(_DASHES)
    s = s.replace("{,}", ",").replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    for _ in range(3):  # nested wrappers: \text{\textbf{5}}
        s = _WRAPPERS.sub(r" \1 ", s)
    s = re.sub(r"\\!", "", s)  # negative thin space: 1\!,\!450
    s = re.sub(r"\\[,;: ]", " ", s)
    s = s.replace("\\$", " ").replace("$", " ").replace("\\%", " ").replace("%", " ")
    s = re.sub(r"\\left|\\right", "", s)
    s = s.replace("\\times", "*").replace("\\cdot", "*").replace("\\div", "/").replace("×", "*").replace("÷", "/")
    for _ in range(3):
        s = _FRAC.sub(r"((\1)/(\2))", s)
    groups = _GROUPS if space_groups else _COMMA_GROUPS
    return groups.sub(lambda m: m.group(1) + re.sub(r"[, ]", "", m.group(2)), s)


def _strip_words(s: str) -> str:
    """Drop unit words and trailing punctuation (``18 dollars.``), keep the arithmetic."""
    s = re.sub(r"\\[A-Za-z]+", " ", s)  # leftover LaTeX commands
    s = re.sub(r"[A-Za-z_][A-Za-z_']*", " ", s)
    return s.strip().rstrip(".").strip()


def _evaluate(expr: str) -> Fraction | None:
    expr = expr.replace("^", "**").replace("{", "(").replace("}", ")")
    if not expr or len(expr) > 200:
        return None
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError:
        return None

    def walk(n) -> Fraction:
        if isinstance(n, ast.Constant) and type(n.value) in (int, float):
            return Fraction(ast.get_source_segment(expr, n) or repr(n.value))
        if isinstance(n, ast.UnaryOp) and isinstance(n.op, (ast.USub, ast.UAdd)):
            v = walk(n.operand)
            return -v if isinstance(n.op, ast.USub) else v
        if isinstance(n, ast.BinOp):
            a, b = walk(n.left), walk(n.right)
            if isinstance(n.op, ast.Add):
                return a + b
            if isinstance(n.op, ast.Sub):
                return a - b
            if isinstance(n.op, ast.Mult):
                return a * b
            if isinstance(n.op, ast.Div):
                if b == 0:
                    raise ZeroDivisionError
                return a / b
            if isinstance(n.op, ast.Pow):
                if b.denominator != 1 or abs(b) > 64 or (a == 0 and b < 0):
                    raise ValueError("exponent")
                return a ** int(b)
        raise ValueError("not arithmetic")

    try:
        return walk(tree.body)
    except (ValueError, ZeroDivisionError, OverflowError, TypeError):
        return None


def numeric_value(s: str | None) -> Fraction | None:
    """The exact value of an answer block: the right-most side of an equation, evaluated (module docstring)."""
    if s is None:
        return None
    s = normalise(s)
    s = s.split("=")[-1]
    s = _strip_words(s)
    s = re.sub(r"(?<=\d),(?=\d)", "", s)  # a separator left over from an irregular grouping
    s = re.sub(r"\s+", " ", s).strip()
    if re.search(r"\d\s+\d", s):  # two numbers side by side: no single value
        return None
    return _evaluate(s.replace(" ", ""))


def last_number(text: str) -> Fraction | None:
    """The last number in free text (no box, no answer block), separators and LaTeX understood."""
    nums = NUMBER.findall(normalise(text, space_groups=False))
    for n in reversed(nums):
        try:
            return Fraction(n)
        except (ValueError, ZeroDivisionError):
            continue
    return None
