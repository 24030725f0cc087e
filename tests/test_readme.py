"""Every snippet of README.md runs as printed (issue 17).

The fenced blocks are found when the tests are collected, so a section added later is
tested without touching this file:

* ```python blocks run, each in a fresh interpreter in an empty temporary folder (so a
  snippet that needs a name from another one fails here, as it would for a reader);
* command blocks (``` or ```bash) are checked line by line without running anything
  long: ``python -m airi.train ...`` (also after ``mpiexec ...`` or ``VAR=value``) must
  parse with the CLI's own parser, ``AIRI_*`` variables must be accepted by
  ``import airi``, ``python -c "..."`` runs, ``pip install ".[extra]"`` must name an
  extra of pyproject.toml; a block that is not a command (say, a hostfile) is skipped
  with the reason.
"""
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

pytestmark = pytest.mark.skipif(not README.exists(), reason="README.md is not beside "
                                                            "the tests")

FENCE = re.compile(r"^(\s*)```(\w*)\s*$")
COMMANDS = ("python", "pip", "mpiexec", "pytest", "airi-train")


def fenced_blocks(text):
    """[(language, first line number, code)] of every fenced block of ``text``."""
    blocks, lines = [], text.splitlines()
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, language = opening.group(1), opening.group(2).lower()
        body, j = [], i + 1
        while j < len(lines) and not FENCE.match(lines[j]):
            line = lines[j]
            body.append(line[len(indent):] if line.startswith(indent) else line)
            j += 1
        blocks.append((language, i + 1, "\n".join(body) + "\n"))
        i = j + 1
    return blocks


def _blocks(kind):
    if not README.exists():
        return []
    found = []
    for language, line, code in fenced_blocks(README.read_text(encoding="utf-8")):
        is_python = language in ("python", "py")
        if (kind == "python") == is_python:
            found.append(pytest.param(code, id=f"README.md:{line}"))
    return found


def python_env():
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRI_")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["MPLBACKEND"] = "Agg"
    return env


def test_the_readme_has_snippets():
    assert len(_blocks("python")) >= 4 and len(_blocks("command")) >= 4


@pytest.mark.parametrize("code", _blocks("python"))
def test_python_snippet_runs_as_printed(code, tmp_path):
    if re.search(r"^\s*(import torch|from torch[ .])", code, re.M):
        pytest.importorskip("torch")   # the PyTorch round trip: torch is optional
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=python_env(),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"the snippet failed:\n{code}\n{result.stderr}"


# ---------------------------------------------------------------- command blocks
def command_lines(code):
    """The commands of a block: comments dropped, continuation lines joined."""
    joined = code.replace("\\\n", " ")
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        words = shlex.split(line, comments=True)
        part = []
        for word in words + ["&&"]:          # `a && b` is two commands
            if word in ("&&", ";", "||"):
                if part:
                    yield line, part
                part = []
            else:
                part.append(word)


def split_command(words):
    """(environment assignments, the command's words), e.g. AIRI_X=1 python ..."""
    env = {}
    while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):
        name, value = words[0].split("=", 1)
        env[name] = value
        words = words[1:]
    return env, words


def airi_train_arguments(words):
    """The arguments after `python -m airi.train` (or None if it is not that)."""
    if words[:1] == ["mpiexec"]:
        rest = words[1:]
        while rest and rest[0] not in ("python", "python3"):
            rest = rest[1:]
        words = rest
    if words[:3] in (["python", "-m", "airi.train"], ["python3", "-m", "airi.train"]):
        return words[3:]
    if words[:1] == ["airi-train"]:
        return words[1:]
    return None


def pyproject_extras():
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    section = text.split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
    return set(re.findall(r"^(\w+)\s*=", section, flags=re.M))


def check_command(line, words):
    from airi.cli import build_parser
    env, words = split_command(words)
    if env:
        airi_vars = {k: v for k, v in env.items() if k.startswith("AIRI_")}
        result = subprocess.run([sys.executable, "-c", "import airi"], cwd=ROOT,
                                env=dict(python_env(), **airi_vars), capture_output=True,
                                text=True, timeout=120)
        assert result.returncode == 0, f"{line}: {result.stderr}"
    arguments = airi_train_arguments(words)
    if arguments is not None:
        try:
            build_parser().parse_args(arguments)
        except SystemExit as exc:
            pytest.fail(f"{line}: the CLI rejects these options (exit {exc.code})")
        return
    if words[:2] in (["python", "-c"], ["python3", "-c"]):
        result = subprocess.run([sys.executable, "-c", words[2]], cwd=ROOT,
                                env=python_env(), capture_output=True, text=True,
                                timeout=120)
        assert result.returncode == 0, f"{line}: {result.stderr}"
        return
    if words[:2] == ["pip", "install"]:
        for target in words[2:]:
            extras = re.fullmatch(r"\.\[([\w,]+)\]", target)
            if extras:
                unknown = set(extras.group(1).split(",")) - pyproject_extras()
                assert not unknown, f"{line}: no such extra {sorted(unknown)}"
        return


@pytest.mark.parametrize("code", _blocks("command"))
def test_command_snippet_is_valid(code):
    commands = list(command_lines(code))
    if not commands or split_command(commands[0][1])[1][:1] == [] or \
            split_command(commands[0][1])[1][0] not in COMMANDS:
        pytest.skip(f"not a block of commands: {code.splitlines()[0]!r}")
    for line, words in commands:
        check_command(line, words)
