"""Shell completion follows click's protocol (``_EDGEFAULT_COMPLETE``), through edgefault's own entry point."""

import os

from cli_helpers import run_subprocess


def _complete(words: str) -> list[str]:
    env = {**os.environ, "_EDGEFAULT_COMPLETE": "bash_complete", "COMP_WORDS": words,
           "COMP_CWORD": str(len(words.split()) - 1)}
    result = run_subprocess(env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_commands_and_options_complete():
    assert "plain,campaign" in _complete("edgefault camp")
    assert "plain,--kinds" in _complete("edgefault campaign --ki")


def test_the_bash_script_is_printed():
    result = run_subprocess(env={**os.environ, "_EDGEFAULT_COMPLETE": "bash_source"})
    assert result.returncode == 0 and "_edgefault_completion()" in result.stdout
