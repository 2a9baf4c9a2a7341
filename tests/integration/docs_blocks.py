# SPDX-License-Identifier: PostgreSQL
"""docs_blocks.py - the fenced code blocks of docs/*.md, and what the suite does with each.

A block's language says what it is. ``` (no language), ```json and ```yaml are output,
syntax, diagrams or other programs' configuration: shown, not run; ```ini fragments are
loaded with pgsluice --check-config (test_docs_examples.py). ```sh, ```sql,
```python and ```js are examples: each is run by tests/integration/test_docs_examples.py,
unless the line before its fence says otherwise:

    <!-- run by tests/integration/test_x.py -->      another test runs it (and names the doc)
    <!-- not run: why -->                           it cannot run as written here, and why
"""

import re

import harness

DOCS = harness.REPO / "docs"
RUNNABLE = ("sh", "sql", "python", "js")
_MARK = re.compile(r"^<!--\s*(run by|not run:)\s*(.*?)\s*-->\s*$")


class Block:
    def __init__(self, doc, line, lang, text, mark, why):
        self.doc, self.line, self.lang, self.text = doc, line, lang, text
        self.mark, self.why = mark, why        # "run by" / "not run:" / None

    @property
    def id(self):
        return f"{self.doc}:{self.line}"

    def __repr__(self):
        return f"<{self.id} {self.lang or 'text'}>"


def blocks():
    """Every fenced block of docs/*.md, in file order."""
    found = []
    for path in sorted(DOCS.glob("*.md")):
        lines = path.read_text().split("\n")
        i = 0
        while i < len(lines):
            m = re.match(r"^```(\w*)\s*$", lines[i])
            if not m:
                i += 1
                continue
            j = i + 1
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            mark = _MARK.match(lines[i - 1]) if i else None
            found.append(Block(path.name, i + 1, m.group(1), "\n".join(lines[i + 1:j]) + "\n",
                               mark.group(1) if mark else None, mark.group(2) if mark else None))
            i = j + 1
    return found


def examples(lang):
    """The blocks of lang that test_docs_examples.py runs itself (no mark)."""
    return [b for b in blocks() if b.lang == lang and b.mark is None]
