"""What one source file contributes to the corpus: its text, function-docstring pairs and
continuation examples, found with `ast` (nothing is imported or executed).

- ``summarize``: every function or method with a docstring and code besides it becomes a
  pair (its code without the docstring, the docstring's leading prose: the summary line and
  the description paragraphs that follow it, up to the first section header such as
  ``Parameters`` / ``Args:`` or doctest, at most `TARGET_CHARS` characters).
- ``continue``: a few functions per module (`CONTINUE_PER_MODULE`, chosen by a hash of their
  name) of `MIN_CONTINUE_LINES` to `MAX_CONTINUE_LINES` lines are cut at a line boundary into a
  prompt (their first `PROMPT_FRACTION` of lines) and a target (the rest).

Examples are stored as line spans into their module's text (the corpus ships each module's
text once): `pair_texts` and `continue_texts` turn a span back into text, the same way at
build time and at load time. `extract_file` is a plain function of a path, so that a
process pool can run it; it returns plain tuples.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import re
import textwrap
import warnings
from collections.abc import Iterator
from pathlib import Path

from speedsim.limits import MAX_FILE_BYTES

TARGET_CHARS = 400  # docstring target: leading prose paragraphs up to this many characters
MIN_TARGET_WORDS = 3  # shorter docstrings ("Return x.") are too easy to teach anything
MIN_CONTINUE_LINES = 6
MAX_CONTINUE_LINES = 60
CONTINUE_PER_MODULE = 4
PROMPT_FRACTION = 0.4

# A paragraph that starts a structured section ends the prose of a docstring.
_SECTION = re.compile(
    r"^(\w[\w ]*\n[-=~^]{3,}|(Args|Arguments|Parameters|Returns?|Yields?|Raises|Examples?|Notes?|See Also|"
    r"Attributes|Keyword Arguments|References|Warnings?|Todo)\s*:|>>>|\.\. |:param|:returns?:|@param)",
    re.IGNORECASE,
)

FunctionNode = ast.FunctionDef | ast.AsyncFunctionDef
# (qualname, [def line, end line, docstring start, docstring end], target) of a summarize pair
PairSpan = tuple[str, list[int], str]
# (qualname, [def line, end line, prompt lines]) of a continuation example
ContinueSpan = tuple[str, list[int]]


def first_paragraph(doc: str) -> str:
    """The first paragraph of a docstring, cleaned and joined onto one line."""
    para = inspect.cleandoc(doc).split("\n\n", 1)[0]
    return " ".join(para.split())


def docstring_target(doc: str) -> str:
    """The docstring's leading prose: paragraphs joined onto one line each, one per line,
    up to the first section header or `TARGET_CHARS` characters (the first always kept)."""
    paragraphs = [p for p in re.split(r"\n\s*\n", inspect.cleandoc(doc)) if p.strip()]
    out: list[str] = []
    for p in paragraphs:
        if out and _SECTION.match(p.strip()):
            break
        text = " ".join(p.split())
        if out and len("\n".join([*out, text])) > TARGET_CHARS:
            break
        out.append(text)
    return "\n".join(out)


def functions(tree: ast.AST) -> Iterator[tuple[str, FunctionNode]]:
    """(qualified name, node) of every function and method, outer before inner."""
    stack: list[tuple[str, ast.AST]] = [("", tree)]
    while stack:
        prefix, node = stack.pop(0)
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                qual = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    yield qual, child
                stack.append((qual + ".", child))


def function_lines(src_lines: list[str], start: int, end: int) -> list[str]:
    """Lines `start`..`end` (1-based, inclusive) of a module, dedented: a function from its `def`."""
    return textwrap.dedent("".join(src_lines[start - 1 : end])).splitlines()


def pair_texts(src_lines: list[str], span: list[int]) -> str | None:
    """The code of a summarize pair: the function's lines without its docstring lines;
    None if nothing but the signature would be left."""
    start, end, doc_start, doc_end = span
    lines = function_lines(src_lines, start, end)
    kept = lines[: doc_start - start] + lines[doc_end - start + 1 :]
    if len(kept) <= 1:
        return None
    return "\n".join(line.rstrip() for line in kept)


def continue_texts(src_lines: list[str], span: list[int]) -> tuple[str, str]:
    """(prompt, rest) of a continuation example: the function cut after its first `span[2]` lines."""
    start, end, cut = span
    lines = function_lines(src_lines, start, end)
    return "\n".join(lines[:cut]) + "\n", "\n".join(lines[cut:])


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def examples_of(text: str, tree: ast.AST) -> tuple[list[PairSpan], list[ContinueSpan]]:
    """(summarize pairs, continuation examples) of one parsed module, as line spans."""
    src_lines = text.splitlines(keepends=True)
    pairs: list[PairSpan] = []
    candidates: list[tuple[int, ContinueSpan]] = []
    for qual, node in functions(tree):
        end = node.end_lineno or node.lineno
        n_lines = end - node.lineno + 1
        doc = ast.get_docstring(node, clean=False)
        if doc and len(node.body) > 1:
            target = docstring_target(doc)
            d = node.body[0]
            span = [node.lineno, end, d.lineno, d.end_lineno or d.lineno]
            if len(target.split()) >= MIN_TARGET_WORDS and pair_texts(src_lines, span):
                pairs.append((qual, span, target))
        if MIN_CONTINUE_LINES <= n_lines <= MAX_CONTINUE_LINES:
            candidates.append((_hash(qual), (qual, [node.lineno, end, max(1, int(n_lines * PROMPT_FRACTION))])))
    cont = [ex for _, ex in sorted(candidates)[:CONTINUE_PER_MODULE]]
    return pairs, sorted(cont, key=lambda ex: ex[1][0])


def extract_file(path: str) -> tuple[str, str, list[PairSpan], list[ContinueSpan]] | None:
    """(sha256 of the bytes, text, pairs, continuations) of one file, or None if it is too
    large, not UTF-8 or not valid Python (some files are deliberately invalid)."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return None
    if len(data) > MAX_FILE_BYTES:
        return None
    try:
        text = data.decode("utf-8")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid escape sequences and the like in old code
            tree = ast.parse(text)
    except (SyntaxError, UnicodeDecodeError, ValueError, RecursionError, MemoryError):
        return None
    pairs, cont = examples_of(text, tree)
    return hashlib.sha256(data).hexdigest(), text, pairs, cont
