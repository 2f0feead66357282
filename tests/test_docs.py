"""The README and docs/ pages: the front page stays short, every page is linked and every link resolves,
and every `bench` command in a ```bash block parses with the real command-line parser (flags, sub-commands
and choices that exist), so the documentation cannot drift from the CLI unnoticed."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from bench.cli import build_parser, main

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def _bash_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, flags=re.S)


def _bench_commands(block: str) -> list[list[str]]:
    """`bench ...` invocations of a shell block (continuations joined, comments and env prefixes dropped)."""
    joined = re.sub(r"\\\n\s*", " ", block)
    out = []
    for line in joined.splitlines():
        line = line.split(" # ")[0].strip()
        words = shlex.split(line, comments=True) if line else []
        while words and re.match(r"^[A-Z_]+=", words[0]):  # VAR=value prefixes
            words = words[1:]
        if "-m" in words and "bench.cli" in words:  # torchrun ... -m bench.cli ARGS
            words = ["bench"] + words[words.index("bench.cli") + 1:]
        if words[:1] == ["nice"]:
            words = words[3:] if words[1:2] == ["-n"] else words[1:]
        if words[:1] == ["bench"] and not any(w.startswith("$") for w in words):
            out.append(words[1:])
    return out


def test_front_page_is_short_and_links_every_docs_page():
    readme = (REPO / "README.md").read_text()
    assert readme.count("\n") <= 200
    for page in PAGES[1:]:
        assert f"](docs/{page.name})" in readme, f"{page.name} is not linked from the README"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page):
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", page.read_text()):
        if "://" in target:
            continue
        assert (page.parent / target).exists(), f"{page.name}: broken link {target}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_bench_command_in_a_bash_block_parses(page):
    parser = build_parser()
    commands = [c for b in _bash_blocks(page.read_text()) for c in _bench_commands(b)]
    bad = []
    for argv in commands:
        try:
            parser.parse_args(argv)
        except SystemExit:
            bad.append(" ".join(argv))
    assert not bad, f"{page.name}: commands the CLI rejects: {bad}"


def test_the_cheap_documented_commands_run(capsys):
    assert main(["list", "upstreams"]) == 0 and "hear:" in capsys.readouterr().out
    assert main(["list", "tasks"]) == 0 and "icbhi" in capsys.readouterr().out
