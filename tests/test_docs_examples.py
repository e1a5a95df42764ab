"""Every ```python block of the README files and of docs/ runs.

A page's blocks run in order in one fresh interpreter (a subprocess started in an empty
temporary folder), sharing one namespace as a reader following the page would: a later block
may use what an earlier one defined. Examples must make the data they read. A block that cannot
run here (a GPU, a remote store, hours of training) carries ``notest`` in its fence's info
string, which the page shows as a plain Python block:

    ```python notest
    trainer.fit(model)  # hours on 8 GPUs
    ```

Tracebacks point into the Markdown file: each block is compiled with the file's own path and
line numbers.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PAGES = sorted(
    {
        ROOT / "README.md",
        *ROOT.glob("packages/*/README.md"),
        *ROOT.glob("applications/*/README.md"),
        *ROOT.glob("docs/**/*.md"),
    }
)

# An opening fence: any indentation (fences inside list items are indented), ``` or ~~~ (three
# or more) and an info string; the closing fence uses the same character, at least as many, and
# nothing after it.
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*)$")

NOT_RUNNABLE = "notest"

# Blocks in pages whose authors still have to make them self-contained or mark them `notest`.
# Each one still runs (after the runnable blocks before it) and must fail: once it is fixed,
# test_known_broken_examples_still_fail fails until its entry goes. Keyed by page and a piece
# of the block's code.
KNOWN_BROKEN: dict[tuple[str, str], str] = {}

TIMEOUT_S = 600


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # 1-based line of the block's first code line in the page
    source: str
    flags: frozenset[str]

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    @property
    def runnable(self) -> bool:
        return NOT_RUNNABLE not in self.flags and known_broken(self) is None


def python_blocks(page: Path) -> list[Block]:
    """The page's fenced Python blocks, dedented by their fence's indentation."""
    blocks: list[Block] = []
    lines = page.read_text(encoding="utf-8").splitlines()
    number = 0
    while number < len(lines):
        opening = FENCE.match(lines[number])
        number += 1
        if opening is None:
            continue
        indent, fence = len(opening["indent"]), opening["fence"]
        words = opening["info"].split()
        body: list[str] = []
        first = number + 1
        while number < len(lines):
            closing = FENCE.match(lines[number])
            number += 1
            if (
                closing is not None
                and closing["fence"][0] == fence[0]
                and len(closing["fence"]) >= len(fence)
                and not closing["info"].strip()
            ):
                break
            body.append(lines[number - 1][indent:] if lines[number - 1].strip() else "")
        else:
            raise ValueError(f"{page}:{first - 1}: code fence {fence} is never closed")
        if words and words[0] in ("python", "py"):
            blocks.append(Block(page, first, "\n".join(body) + "\n", frozenset(words[1:])))
    return blocks


def known_broken(block: Block) -> str | None:
    page = str(block.page.relative_to(ROOT))
    for (broken_page, piece), reason in KNOWN_BROKEN.items():
        if broken_page == page and piece in block.source:
            return reason
    return None


RUNNER = """
import json, sys
ns = {"__name__": "__main__"}
for where, page, line, source in json.load(open(sys.argv[1], encoding="utf-8")):
    print(f"--- running {where}", flush=True)
    exec(compile("\\n" * (line - 1) + source, page, "exec"), ns)
"""


def run_blocks(blocks: list[Block], folder: Path) -> subprocess.CompletedProcess[str]:
    """Run the blocks in order in one new interpreter whose working folder is ``folder``."""
    spec = folder.parent / f"{folder.name}-blocks.json"
    spec.write_text(
        json.dumps([[b.where, str(b.page), b.line, b.source] for b in blocks]), encoding="utf-8"
    )
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(
        [sys.executable, "-c", RUNNER, str(spec)],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )


def report(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit status {result.returncode}\n{result.stdout[-4000:]}\n{result.stderr[-8000:]}"


PAGES_WITH_CODE = [page for page in PAGES if python_blocks(page)]


@pytest.mark.parametrize("page", PAGES_WITH_CODE, ids=lambda p: str(p.relative_to(ROOT)))
def test_page_examples_run(page: Path, tmp_path: Path) -> None:
    blocks = [block for block in python_blocks(page) if block.runnable]
    if not blocks:
        pytest.skip(f"{page.relative_to(ROOT)}: no runnable block (`notest` or KNOWN_BROKEN)")
    folder = tmp_path / "work"
    folder.mkdir()
    result = run_blocks(blocks, folder)
    assert result.returncode == 0, report(result)


BROKEN = [block for page in PAGES_WITH_CODE for block in python_blocks(page) if known_broken(block)]


@pytest.mark.parametrize("block", BROKEN, ids=lambda b: b.where)
def test_known_broken_examples_still_fail(block: Block, tmp_path: Path) -> None:
    """A known-broken block still fails; when it is fixed, remove it from KNOWN_BROKEN."""
    before = [b for b in python_blocks(block.page) if b.runnable and b.line < block.line]
    folder = tmp_path / "work"
    folder.mkdir()
    result = run_blocks([*before, block], folder)
    assert result.returncode != 0, (
        f"{block.where} runs now; remove it from KNOWN_BROKEN ({known_broken(block)})"
    )
    assert f"--- running {block.where}" in result.stdout, (
        f"a block before {block.where} failed first:\n{report(result)}"
    )


def test_known_broken_entries_match_a_block() -> None:
    for page, piece in KNOWN_BROKEN:
        sources = [b.source for b in python_blocks(ROOT / page)]
        assert any(piece in source for source in sources), (
            f"KNOWN_BROKEN entry ({page!r}, {piece!r}) matches no Python block: remove it"
        )


def test_fence_parser_reads_info_strings_and_nested_fences(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "text\n"
        "```python\n"
        "a = 1\n"
        "```\n"
        "- item\n"
        "\n"
        "    ```python notest\n"
        "    b = 2\n"
        "\n"
        "    c = 3\n"
        "    ```\n"
        "````markdown\n"
        "```python\n"
        "not = code\n"
        "```\n"
        "````\n"
        "```\n"
        "uv run pytest\n"
        "```\n",
        encoding="utf-8",
    )
    blocks = python_blocks(page)
    assert [(b.line, b.source, b.flags) for b in blocks] == [
        (3, "a = 1\n", frozenset()),
        (8, "b = 2\n\nc = 3\n", frozenset({"notest"})),
    ]
