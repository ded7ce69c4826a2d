"""The README is what a user reads first: its commands must compose, its links must resolve, and it
must stay short enough to read (the depth lives in docs/).

Each `python -m src.train ...` in a README code block runs with `--cfg all`, which composes the config
(every override checked against the schemas) and prints it without training. Hydra refuses `--cfg`
together with `--multirun`, so a sweep command is checked as its first job: the flag dropped and each
sweep value (`a,b,c`, `range(...)`, `choice(...)`, `interval(...)`) replaced by its first value.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep, Override

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
MAX_README_LINES = 250

FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)[^)]*\)")  # [text](target) and ![alt](target)
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")  # http:, https:, mailto: ... : not a file
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)
ENTRY_POINTS = (("python", "-m", "src.train"), ("nox", "-s", "train", "--"))
MULTIRUN_FLAGS = {"--multirun", "-m"}


def code_blocks(text: str) -> list[str]:
    return [block.split("\n", 1)[1].rsplit("```", 1)[0] for block in FENCE.findall(text)]


def train_commands(text: str) -> list[str]:
    """Every `python -m src.train ...` (or `nox -s train -- ...`) a code block holds, as typed: a
    `$ ` prompt dropped, `\\` continuations joined, each part of an `a && b` chain on its own."""
    commands = []
    for block in code_blocks(text):
        for line in re.sub(r"\\\n\s*", "", block).splitlines():
            for part in line.removeprefix("$ ").split("&&"):
                command = part.strip()
                if command.startswith(tuple(" ".join(entry) for entry in ENTRY_POINTS)):
                    commands.append(command)
    return list(dict.fromkeys(commands))  # the set-up and a section may show the same command


def overrides_of(command: str) -> list[str]:
    words = shlex.split(command, comments=True)
    for entry in ENTRY_POINTS:
        if tuple(words[: len(entry)]) == entry:
            return words[len(entry) :]
    raise AssertionError(f"not a training command: {command}")


def first_job(override: Override) -> str:
    """A sweep override as the value of its first job, e.g. `optimizer=sgd,adam` → `optimizer=sgd`."""
    sweep = override.value()
    first = sweep.start if isinstance(sweep, IntervalSweep) else next(iter(override.sweep_string_iterator()))
    return f"{override.get_key_element()}={first}"


def single_run(args: list[str]) -> list[str]:
    """The command line of a sweep's first job; a single run's as it is."""
    parser = OverridesParser.create()
    run = []
    for arg in args:
        if arg in MULTIRUN_FLAGS:
            continue
        override = parser.parse_override(arg)
        run.append(first_job(override) if override.is_sweep_override() else arg)
    return run


def lookup(config: dict[str, Any], dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        assert isinstance(node, dict) and part in node, f"{dotted} is not in the printed config"
        node = node[part]
    return node


COMMANDS = train_commands(README.read_text())


def test_the_readme_has_training_commands() -> None:
    assert len(COMMANDS) >= 5, COMMANDS  # the set-up's run and the five things users do


@pytest.mark.parametrize("command", COMMANDS, ids=COMMANDS)
def test_readme_command_composes(command: str, tmp_path: Path) -> None:
    args = single_run(overrides_of(command))
    env = {k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR", "MLFLOW_TRACKING_URI")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-m", "src.train", *args, "--cfg", "all"],
        cwd=tmp_path,  # nothing lands in the repository
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"{' '.join(args)} --cfg all exited {done.returncode}:\n{done.stderr}"
    config = yaml.safe_load(done.stdout)
    assert isinstance(config, dict), done.stdout
    choices = config["hydra"]["runtime"]["choices"]
    parser = OverridesParser.create()
    for override in parser.parse_overrides(args):
        if override.is_delete():
            continue
        key, expected = override.key_or_group, override.value()
        if key in choices:  # a group: optimizer=nesterov, +experiment=..., hydra/launcher=slurm
            assert choices[key] == expected, f"{key}: chose {choices[key]!r}, not {expected!r}"
        else:
            assert lookup(config, key) == expected, f"{key}: the config holds {lookup(config, key)!r}"


def anchors(page: Path) -> set[str]:
    """GitHub's ids for a page's headings: lower case, punctuation dropped, spaces as hyphens, a
    repeated heading numbered."""
    seen: dict[str, int] = {}
    ids = set()
    for heading in HEADING.findall(FENCE.sub("", page.read_text())):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        ids.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
        seen[slug] = seen.get(slug, 0) + 1
    return ids


def links(page: Path) -> list[str]:
    prose = INLINE_CODE.sub("", FENCE.sub("", page.read_text()))
    return [target for target in LINK.findall(prose) if not SCHEME.match(target)]


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for target in links(page):
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.is_file():
            broken.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no heading #{anchor} in {file.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def test_every_docs_page_is_linked_from_the_readme() -> None:
    linked = {(README.parent / t.partition("#")[0]).resolve() for t in links(README)}
    unlinked = [p.name for p in PAGES[1:] if p.resolve() not in linked]
    assert not unlinked, f"docs pages the README does not link to: {unlinked}"


def test_readme_is_short() -> None:
    lines = len(README.read_text().splitlines())
    assert lines <= MAX_README_LINES, f"README.md has {lines} lines; move depth to docs/"
