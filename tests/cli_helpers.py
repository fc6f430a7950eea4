"""Running the CLI in-process and checking its one-line errors, shared by the CLI tests."""

import subprocess
import sys

import pytest

from edgefault.cli.main import main


def run(argv, capsys):
    """Run the CLI in-process; return (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exited:
        main(argv)
    captured = capsys.readouterr()
    return exited.value.code, captured.out, captured.err


def assert_one_error_line(code, out, err, fragment):
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgefault: error:"), err
    assert fragment in lines[0]


def run_subprocess(*args, **options):
    """Run ``edgefault ARGS...`` in a fresh interpreter, as a user would; return the CompletedProcess.

    ``options`` go to ``subprocess.run`` (e.g. ``preexec_fn`` to set a resource limit, ``env``, ``cwd``).
    """
    return subprocess.run([sys.executable, "-m", "edgefault.cli.main", *args], capture_output=True, text=True,
                          **options)
