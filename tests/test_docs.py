"""The documentation keeps up with the code: a page and a README row per CLI command, links that resolve, a short
README, and README's test command equal to what CI runs."""
from __future__ import annotations

import re
from pathlib import Path

import click
import pytest
from vizkit_cli.main import main

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = sorted([README, ROOT / "benchmarks" / "README.md", *(ROOT / "docs").rglob("*.md")])
COMMANDS = sorted(main.commands)

_FENCE = re.compile(r"^```.*?^```", re.S | re.M)
_CODE = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^)\s]+)\)")


def _prose(text: str) -> str:
    """The text without code blocks and inline code, where brackets are not links."""
    return _CODE.sub("", _FENCE.sub("", text))


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _headings(page: Path, level: str = "#+") -> list[str]:
    return re.findall(rf"^{level} (.+)$", _FENCE.sub("", page.read_text()), re.M)


def test_readme_is_at_most_250_lines() -> None:
    assert len(README.read_text().splitlines()) <= 250


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_has_a_page_and_a_readme_row(name: str) -> None:
    page = ROOT / "docs" / "commands" / f"{name}.md"
    assert page.is_file(), f"vizkit {name} has no page: write docs/commands/{name}.md"
    text = page.read_text()
    assert text.startswith(f"# `vizkit {name}`"), f"{page.name} must start with the command's name"
    command = main.commands[name]
    if isinstance(command, click.Group):  # a group's page covers each of its commands
        for sub in command.commands:
            assert f"vizkit {name} {sub}" in text, f"{page.name} does not describe 'vizkit {name} {sub}'"
    row = f"| [`vizkit {name}`](docs/commands/{name}.md) |"
    assert sum(line.startswith(row) for line in README.read_text().splitlines()) == 1, f"README needs one row {row}"


def test_no_page_for_a_command_that_does_not_exist() -> None:
    pages = {p.stem for p in (ROOT / "docs" / "commands").glob("*.md")}
    assert pages == set(COMMANDS)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for target in _LINK.findall(_prose(page.read_text())):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in {_slug(h) for h in _headings(dest)}:
            broken.append(f"{target}: no heading with that anchor")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


@pytest.mark.parametrize("page", [p for p in PAGES if "Contents" in _headings(p, "##")],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_a_table_of_contents_lists_every_section(page: Path) -> None:
    text = page.read_text()
    contents = text.split("## Contents", 1)[1].split("\n## ", 1)[0]
    listed = {m for m in re.findall(r"\]\(#([^)]+)\)", contents)}
    sections = {_slug(h) for h in _headings(page, "##")} - {"contents"}
    assert sections <= listed, f"{page.relative_to(ROOT)}: add {sorted(sections - listed)} to its Contents"


def _readme_test_steps() -> list[str]:
    block = re.search(r"```bash\n(.*?)```", README.read_text(), re.S)
    assert block, "README must open with a bash block holding the two commands"
    lines = block.group(1).replace("\\\n", " ").splitlines()
    (command,) = [line for line in lines if '".[test]"' in line]
    steps = [" ".join(s.split()) for s in command.split("&&")]
    return [s for s in steps if s.split()[0] in {"pip", "ruff", "mypy", "pytest"}]


def _ci_steps() -> list[str]:
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    steps = [" ".join(t for t in line.split() if t != "-q") for line in lines]
    return [s for s in steps if s and s.split()[0] in {"pip", "ruff", "mypy", "pytest"}]


def test_readme_test_command_is_what_ci_runs() -> None:
    readme = _readme_test_steps()
    assert readme[-1].startswith("pytest") and readme == _ci_steps()
