"""What of an old README is in the new documentation: each paragraph, list item, table row and code block of the old
one, by its distinctive tokens (code spans, numbers, technical names), against the new README and each page of docs/.
A unit counts as kept when one document (the new README or one page) holds at least --threshold of its tokens; the
rest are listed, with the tokens that page lacks, for a reader to judge.

    python -m tools.docs_coverage                  # the README before docs/ existed
    python -m tools.docs_coverage --old <commit>   # the README of that commit
    python -m tools.docs_coverage --threshold 0.9 --all

Exit status 1 when any unit is below the threshold.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CODE_SPAN = re.compile(r"`([^`\n]+)`")
NUMBER = re.compile(r"(?<![\w.])\d+(?:[.,]\d+)+(?![\w.])|(?<![\w.])\d{2,}(?![\w.])")
COMPOUND = re.compile(r"(?<![\w/])[A-Za-z0-9]+(?:[-_/#.:][A-Za-z0-9]+)+")
CAMEL = re.compile(r"\b[A-Za-z]*[a-z][A-Z]\w*|\b[A-Z]{3,}\w*")
WORD = re.compile(r"[a-z]{7,}")


@dataclass
class Unit:
    line: int
    kind: str
    text: str

    def tokens(self) -> set[str]:
        text = self.text
        found = {normal(span) for span in CODE_SPAN.findall(text)}
        bare = CODE_SPAN.sub(" ", text)
        found |= set(NUMBER.findall(bare)) | set(COMPOUND.findall(bare)) | set(CAMEL.findall(bare))
        found = {t for t in found if len(t) > 1}
        # A unit without a technical token is judged by its longer words.
        return found or set(WORD.findall(text.lower()))


def normal(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def units(markdown: str) -> list[Unit]:
    """Paragraphs, list items (with their continuation lines), table rows and code blocks; headings are skipped."""
    found: list[Unit] = []
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")), len(lines))
            found.append(Unit(i + 1, "code", "\n".join(lines[i + 1:end])))
            i = end + 1
        elif not line.strip() or line.startswith("#") or line.startswith("<!--") or re.match(r"^\|[-| ]+\|$", line):
            i += 1
        elif line.startswith("|"):
            found.append(Unit(i + 1, "row", line))
            i += 1
        elif re.match(r"^\s*(?:[-*]|\d+\.) ", line):
            j = i + 1
            while j < len(lines) and lines[j].strip() and not re.match(r"^\s*(?:[-*]|\d+\.) |^```|^\|", lines[j]):
                j += 1
            found.append(Unit(i + 1, "item", " ".join(lines[i:j])))
            i = j
        else:
            j = i + 1
            while j < len(lines) and lines[j].strip() and not re.match(r"^(?:[-*]|\d+\.) |^```|^\||^#", lines[j]):
                j += 1
            found.append(Unit(i + 1, "paragraph", " ".join(lines[i:j])))
            i = j
    return found


def documents(root: Path) -> dict[str, str]:
    paths = [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    return {str(p.relative_to(root)): normal(p.read_text()) for p in paths}


def best(tokens: set[str], docs: dict[str, str]) -> tuple[str, float, set[str]]:
    """The one document that holds most of `tokens`: its name, the share it holds, and what it lacks."""
    scored = []
    for name, text in docs.items():
        lower = text.lower()
        missing = {t for t in tokens if t not in text and t.lower() not in lower}
        scored.append((1 - len(missing) / len(tokens) if tokens else 1.0, name, missing))
    share, name, missing = max(scored, key=lambda s: s[0])
    return name, share, missing


def old_readme(ref: str | None) -> tuple[str, str]:
    if ref is None:
        first = subprocess.run(["git", "log", "--diff-filter=A", "--format=%H", "--", "docs/configuration.md"],
                               cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
        if not first:
            raise SystemExit("no commit added docs/configuration.md: give --old <commit>")
        ref = f"{first[-1]}^"
    text = subprocess.run(["git", "show", f"{ref}:README.md"], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout
    return ref, text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", help="the commit whose README is the old one (default: before docs/ existed)")
    parser.add_argument("--threshold", type=float, default=0.8)
    parser.add_argument("--all", action="store_true", help="list every unit, not only those below the threshold")
    args = parser.parse_args()
    ref, text = old_readme(args.old)
    docs = documents(ROOT)
    below = 0
    checked = units(text)
    for unit in checked:
        tokens = unit.tokens()
        name, share, missing = best(tokens, docs)
        if share < args.threshold:
            below += 1
        if share < args.threshold or args.all:
            preview = normal(unit.text)[:100]
            _, anywhere, _ = best(tokens, {"all": " ".join(docs.values())})
            print(f"old README:{unit.line} {unit.kind} {share:.0%} in {name} ({anywhere:.0%} in all): {preview}")
            if missing:
                print(f"    not there: {', '.join(sorted(missing))}")
    print(f"{len(checked)} units of {ref}:README.md, {below} below {args.threshold:.0%} in any one document",
          file=sys.stderr)
    return 1 if below else 0


if __name__ == "__main__":
    sys.exit(main())
