"""Count built-in modality names in string literals of ``bind/`` code (issue #15); docstrings and comments are docs.

Skipped: the converters of published checkpoints (``bind/checkpoints/``, about specific modalities by nature). The
world applications (the world, its experiment runner, the demo, world QA, the video-reduction bench) live outside
``bind/``, in ``examples/world``.
Usage: ``python tests/modality_names.py [-v]`` prints ``file:line: token`` with ``-v`` and the total.
"""

from __future__ import annotations

import ast
import io
import re
import sys
import tokenize
from pathlib import Path

NAMES = re.compile(r"\b(image|video|audio|depth|thermal|imu)\b")
#: string literals (and f-string parts): where code names a modality; identifiers such as a trunk's ``depth`` are not
STRINGS = {tokenize.STRING, getattr(tokenize, "FSTRING_MIDDLE", tokenize.STRING)}
FIELDS = re.compile(r"\{[^{}]*\}")  # an f-string's replacement field (no nesting inside)
QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
SKIP = ("bind/checkpoints/",)


def docstring_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(body, list)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            lines.update(range(body[0].lineno, body[0].end_lineno + 1))
    return lines


def literal_text(tok: tokenize.TokenInfo) -> str:
    """The literal parts of a string token: before Python 3.12 an f-string is one token, whose replacement fields
    (``{depth}``, an identifier) are code, not text; string literals inside them are kept."""
    prefix = re.match(r"[A-Za-z]*", tok.string).group(0).lower()
    if tok.type != tokenize.STRING or "f" not in prefix:
        return tok.string
    text = tok.string.replace("{{", "").replace("}}", "")
    return FIELDS.sub(lambda m: " ".join(QUOTED.findall(m.group(0))), text)


def hits(path: Path) -> list[tuple[int, str]]:
    text = path.read_text()
    docs = docstring_lines(ast.parse(text))
    found = []
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type not in STRINGS or tok.start[0] in docs:
            continue
        for m in NAMES.finditer(literal_text(tok)):
            found.append((tok.start[0], m.group(0)))
    return found


def main() -> int:
    root = Path(__file__).resolve().parent.parent
    total = 0
    for path in sorted((root / "bind").rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel.startswith(SKIP):
            continue
        for line, word in hits(path):
            total += 1
            if "-v" in sys.argv:
                print(f"{rel}:{line}: {word}")
    print(total)
    return 0


if __name__ == "__main__":
    sys.exit(main())
