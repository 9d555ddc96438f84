"""Every code block of README.md, the folder READMEs and docs/*.md runs as written.

* ```python blocks are executed, each in a fresh namespace, in a temporary working directory.
* ```bash blocks are checked without running them: every ``score-sde`` / ``python -m score_sde`` /
  ``torchrun ... -m score_sde`` line must parse with the real ``score-sde`` parser (sub-command and
  flags exist, values have the right types); ``python -m paper_figures`` lines must parse with its
  runner's parser; ``python some/script.py --flag`` names a file of the repository whose source
  mentions each ``--flag``; ``bash some/script.sh`` names an existing file.
* A block right after an HTML comment ``<!-- skip: reason -->`` (a GPU, a checkpoint, a long run) is
  skipped under its name; keep those few.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
FENCE = re.compile(
    r"(?:<!--\s*skip:\s*(?P<skip>.*?)\s*-->\s*\n)?^```(?P<lang>\w*)[^\n]*\n(?P<body>.*?)^```", re.S | re.M
)


def doc_files() -> list[Path]:
    files = [REPO / "README.md", *sorted(REPO.glob("*/README.md")), *sorted((REPO / "docs").glob("*.md"))]
    return [f for f in files if f.is_file() and ".venv" not in f.parts]


def blocks(lang: str) -> list:
    out = []
    for path in doc_files():
        text = path.read_text()
        for m in FENCE.finditer(text):
            if m.group("lang") != lang:
                continue
            line = text[: m.start("body")].count("\n") + 1
            name = f"{path.relative_to(REPO)}:{line}"
            marks = [pytest.mark.skip(reason=m.group("skip"))] if m.group("skip") else []
            out.append(pytest.param(m.group("body"), id=name, marks=marks))
    return out


def test_the_documents_have_runnable_blocks():
    assert len(blocks("python")) >= 6 and len(blocks("bash")) >= 5
    skipped = [p for p in blocks("python") + blocks("bash") if p.marks]
    assert len(skipped) <= 4, f"keep the skipped blocks few: {[p.id for p in skipped]}"


@pytest.mark.parametrize("code", blocks("python"))
def test_python_block_runs(code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.set_default_dtype(torch.float32)  # as a user's session starts (the suite's fixture sets float64)
    from score_sde.solvers import CORRECTORS, SAMPLERS

    registries = [(r, dict(r)) for r in (SAMPLERS, CORRECTORS)]  # a snippet may register names: undo it after
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        exec(compile(code, "<snippet>", "exec"), {"__name__": "__snippet__"})
    finally:
        torch.set_num_threads(threads)
        for registry, saved in registries:
            registry.clear()
            registry.update(saved)


# ---------------------------------------------------------------------------------------------
# bash blocks


def commands(body: str) -> list[list[str]]:
    """The shell commands of a block: continuation lines joined, comments dropped, split at && ; |."""
    text = re.sub(r"\\\n", " ", body)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        words = shlex.split(line, comments=True)
        cmd: list[str] = []
        for w in [*words, "&&"]:
            if w in ("&&", "||", ";", "|"):
                while cmd and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", cmd[0]):  # VAR=value prefixes
                    cmd.pop(0)
                if cmd and cmd[0] == "env":
                    cmd.pop(0)
                    while cmd and "=" in cmd[0]:
                        cmd.pop(0)
                if cmd:
                    out.append(cmd)
                cmd = []
            else:
                cmd.append(w)
    return out


def _is_python(word: str) -> bool:
    return os.path.basename(word).startswith("python")


def check_command(cmd: list[str]) -> None:
    from score_sde import cli

    prog, args = os.path.basename(cmd[0]), cmd[1:]
    if prog == "torchrun":
        if "-m" not in args:
            return
        i = args.index("-m")
        prog, args = "python", args[i:]
    if prog == "score-sde":
        _parse(cli.build_parser(), args)
    elif _is_python(prog) and args[:2] == ["-m", "score_sde"]:
        _parse(cli.build_parser(), args[2:])
    elif _is_python(prog) and args[:2] == ["-m", "paper_figures"]:
        run_all = cli._figures_module()  # paper_figures/run_all.py of this checkout (found next to the package)
        assert run_all is not None, "paper_figures/ is missing"
        p = __import__("argparse").ArgumentParser()
        run_all.add_arguments(p)
        _parse(p, args[2:])
    elif _is_python(prog) and args[:1] == ["-m"] and args[1].startswith("paper_figures."):
        _check_script(REPO / (args[1].replace(".", "/") + ".py"), args[2:], extra=REPO / "paper_figures" / "common.py")
    elif _is_python(prog) and args and args[0].endswith(".py"):
        _check_script(REPO / args[0], args[1:])
    elif prog == "bash" and args and args[0].endswith(".sh"):
        assert (REPO / args[0]).is_file(), f"no such script: {args[0]}"


def _parse(parser, args: list[str]) -> None:
    try:
        parser.parse_args(args)
    except SystemExit as e:
        if e.code not in (0, None):  # --help / --version exit 0
            raise AssertionError(f"does not parse: {args}") from None


def _check_script(path: Path, args: list[str], extra: Path | None = None) -> None:
    assert path.is_file(), f"no such script: {path.relative_to(REPO)}"
    source = path.read_text() + (extra.read_text() if extra else "")
    for flag in (a.split("=", 1)[0] for a in args if a.startswith("--")):
        assert f'"{flag}"' in source, f"{path.relative_to(REPO)} takes no {flag}"


@pytest.mark.parametrize("body", blocks("bash"))
def test_bash_block_commands_exist(body, capsys):
    cmds = commands(body)
    assert cmds
    for cmd in cmds:
        check_command(cmd)
    capsys.readouterr()


def test_the_bash_checker_catches_mistakes():
    with pytest.raises(AssertionError, match="does not parse"):
        check_command(["score-sde", "sample", "--workdir", "w", "--no-such-flag"])
    with pytest.raises(AssertionError, match="does not parse"):
        check_command(["score-sde", "sampel", "--workdir", "w"])
    with pytest.raises(AssertionError, match="takes no --nope"):
        check_command([".venv/bin/python", "benchmarks/digits_bpd.py", "--nope"])
    with pytest.raises(AssertionError, match="no such script"):
        check_command(["python", "benchmarks/missing.py"])
    assert commands("OMP_NUM_THREADS=1 score-sde train --workdir w \\\n  --config c.yaml  # note\n") == [
        ["score-sde", "train", "--workdir", "w", "--config", "c.yaml"]
    ]
