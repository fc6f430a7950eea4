"""Run every ``$ edgefault ...`` command of the README's console blocks, in order, in a fresh folder.

A command whose shown output holds an ``edgefault: error:`` line must fail with exit status 2
and print that line; every other command must succeed and print every shown line in the shape
shown: the same words and layout, any number where the README shows a number.
"""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def console_commands(text: str) -> list[tuple[str, list[str]]]:
    """(command, shown output lines) for each ``$ `` line of each console block."""
    commands = []
    for block in re.findall(r"```console\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            if line.startswith("$ "):
                commands.append((line[2:], []))
            elif commands:
                commands[-1][1].append(line)
    return commands


NUMBER = r"[-+]?(?:\d[\d,]*(?:\.\d+)?|\.\d+)(?:e[-+]?\d+)?"
# Words that report a result rather than the layout, as numbers do: trainings on another machine (other CPU
# kernels, other thread counts) give other models, whose paired difference may be significant and whose power
# iteration may not converge; a machine with one core runs "1 local worker process"; one with CUDA trains "on cuda".
RESULT_WORDS = {"yes": "(?:yes|no)", "no": "(?:yes|no)", "converged": r"(?:NOT\s+)?converged",
                "processes": "process(?:es)?", "cpu)": r"(?:cpu|cuda)\)"}


def shape(line: str) -> re.Pattern:
    """A shown output line as a pattern: its text literal, each number any number, runs of spaces any spaces.

    >>> bool(shape("test accuracy 0.9700  (6 s on cpu)").fullmatch("test accuracy 0.9812  (12 s on cpu)"))
    True
    >>> bool(shape("test accuracy 0.9700").fullmatch("test loss 0.9700"))
    False
    >>> bool(shape("max logit gap 1 step of the scale").fullmatch("max logit gap 2 steps of the scale"))
    True
    >>> bool(shape("std - sparse  0.05  -0.0640  no").fullmatch("std - sparse  0.05  -0.1640  yes"))
    True
    >>> bool(shape("(power iteration converged after 19 steps)").fullmatch("(power iteration NOT converged after 50 steps)"))
    True
    """
    parts = re.split(f"({NUMBER})", line.strip())
    pattern = ""
    for i, part in enumerate(parts):
        if i % 2:
            pattern += NUMBER
            continue
        noun = re.match(r" ([a-z]+)", part) if i else None
        if noun:  # the noun after a number may be singular or plural: "1 step", "2 steps"
            pattern += r"\s+" + re.escape(noun.group(1).removesuffix("s")) + "s?"
            part = part[noun.end():]
        pattern += r"\s+".join(RESULT_WORDS.get(word) or re.escape(word) for word in re.split(r" +", part))
    return re.compile(pattern)


def test_the_readme_has_a_quickstart_worth_running():
    commands = [c for c, _ in console_commands(README.read_text())]
    for verb in ("train", "export", "eval", "inject", "campaign", "sharpness"):
        assert any(c.startswith(f"edgefault {verb} ") for c in commands), verb


def test_every_readme_command_runs(tmp_path):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    for command, shown in console_commands(README.read_text()):
        assert command.startswith("edgefault "), command
        result = subprocess.run(shlex.split(command), cwd=tmp_path, env=env, capture_output=True, text=True,
                                stdin=subprocess.DEVNULL)
        errors = [line for line in shown if line.startswith("edgefault: error:")]
        if errors:
            assert result.returncode == 2, (command, result.stderr)
            assert errors[0] in result.stderr, (command, result.stderr)
        else:
            assert result.returncode == 0, (command, result.stdout[-2000:], result.stderr[-2000:])
            printed = [line.strip() for line in (result.stdout + result.stderr).splitlines()]
            for line in shown:
                if line.strip() and "..." not in line:
                    assert any(shape(line).fullmatch(out) for out in printed), (command, line, printed)
