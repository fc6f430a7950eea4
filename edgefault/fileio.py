"""Output safety shared by every stage: atomic files, paired files, output folders, protected inputs.

Every artifact is written to a temporary file in the destination folder and renamed into
place, so a failure or a kill never leaves a half-written output behind. Folders are created
only together with their first file and removed again when that file cannot be written;
:func:`output_folder` removes everything a failed command created in its folder. No output
may land on an input (:func:`check_outputs`): an input file, an ONNX input's external data
file, or a file of an input run folder (its checkpoint).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import shutil
import stat
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import filelock

from edgefault.errors import EdgefaultError
from edgefault.onnxio import external_data_files
from edgefault.reading import file_kind, read_json
from edgefault.text import printable

__all__ = ["read_json"]  # the bounded JSON reader (edgefault.reading), also reachable here beside the writers


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def _make_folders(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; return those created, deepest first."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for path in reversed(missing):
        path.mkdir(exist_ok=True)
    return missing


def _remove_empty(folders: Iterable[Path]) -> None:
    for folder in folders:  # deepest first; a folder someone else filled meanwhile stays
        with contextlib.suppress(OSError):
            folder.rmdir()


LOCK_PREFIX, LOCK_SUFFIX = ".edgefault-", ".lock"  # a folder's hidden lock files, there only while held


class _Replaced(Exception):
    """The lock file was removed or replaced while this process waited on it: lock the current one."""


def _still_current(path: str) -> Callable[[int], None]:
    def check(fd: int) -> None:
        try:
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                return
        except FileNotFoundError:
            pass
        raise _Replaced(path)
    return check


@contextlib.contextmanager
def exclusive_lock(lock_file: str | os.PathLike, busy: str | None = None) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_file`` across processes; the file exists only while it is held.

    With ``busy`` (the user error to raise), fail at once when another process holds the lock;
    without it, wait. The operating system drops the lock if the process dies (the empty file
    then stays, and the next holder takes it over and removes it). The file is removed before
    the lock is released, and a waiter that gets the lock on a removed file tries the current one.

    Example:
        >>> with exclusive_lock("run.lock", busy="another run is going on"):
        ...     with exclusive_lock("run.lock", busy="another run is going on"):
        ...         pass
        Traceback (most recent call last):
        edgefault.errors.EdgefaultError: another run is going on
        >>> Path("run.lock").exists()
        False
    """
    path = os.fspath(lock_file)
    lock = filelock.FileLock(path, timeout=0 if busy else -1, is_singleton=False, on_acquired=_still_current(path))
    while True:
        try:
            lock.acquire()
            break
        except _Replaced:
            continue
        except filelock.Timeout:
            raise EdgefaultError(busy) from None
    try:
        yield
    finally:
        with contextlib.suppress(OSError):  # Windows keeps an open file: filelock removes it after the release
            os.unlink(path)
        lock.release()


def is_lock_file(name: str) -> bool:
    """Whether ``name`` is one of the hidden lock files :func:`folder_lock` keeps in a folder while held.

    Example:
        >>> is_lock_file(".edgefault-campaign.lock"), is_lock_file("campaign.json")
        (True, False)
    """
    return name.startswith(LOCK_PREFIX) and name.endswith(LOCK_SUFFIX)


def folder_lock(folder: str | os.PathLike, busy: str | None = None,
                purpose: str = "files") -> contextlib.AbstractContextManager[None]:
    """An exclusive lock on a folder for one ``purpose``, held on a hidden file in the folder that is removed
    on release. Locks of different purposes are independent: a campaign holds its folder's ``campaign``
    lock while its summaries take the ``files`` lock of paired writes. The folder must exist.

    Example:
        >>> with folder_lock(".", busy="busy", purpose="campaign"), folder_lock("."):
        ...     sorted(os.listdir("."))
        ['.edgefault-campaign.lock', '.edgefault-files.lock', 'model.onnx']
        >>> sorted(os.listdir("."))
        ['model.onnx']
    """
    return exclusive_lock(Path(folder) / f"{LOCK_PREFIX}{purpose}{LOCK_SUFFIX}", busy=busy)


@contextlib.contextmanager
def atomic_paths(*paths: str | os.PathLike) -> Iterator[tuple[Path, ...]]:
    """Yield temporary paths beside ``paths``; rename them all into place only if the block succeeds.

    Missing folders are created with the first temporary file and removed again on failure.
    Several paths are renamed in turn under a lock on their folder, so two commands writing the
    same pair never interleave (a model and its fault map stay a matching pair).

    Example:
        >>> with atomic_paths("a.onnx", "a.json") as (model, fault_map):
        ...     _ = model.write_bytes(b"model"), fault_map.write_bytes(b"{}")
    """
    targets = [Path(p) for p in paths]
    for target in targets:
        check_replaceable(target)
    created: list[Path] = []
    temporaries: list[Path] = []
    try:
        for target in targets:
            created += _make_folders(target.parent)
            sweep_stale_temporaries(target)
            handle, name = tempfile.mkstemp(prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp", dir=target.parent)
            os.close(handle)
            temporaries.append(Path(name))
            os.chmod(name, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; outputs get the usual permissions
        try:
            yield tuple(temporaries)
        except OSError as exc:
            if exc.filename is None:  # a failed write() names no file: name the output
                exc.filename = str(targets[0]) if len(targets) == 1 else f"{targets[0].parent}/"
            raise
        with folder_lock(targets[0].parent) if len(targets) > 1 else contextlib.nullcontext():
            for temporary, target in zip(temporaries, targets):
                os.replace(temporary, target)
        created = []
    finally:
        for temporary in temporaries:
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()
        _remove_empty(created)


STALE_SECONDS = 60  # a temporary untouched this long, of a process that is gone, is a leftover


def sweep_stale_temporaries(target: str | os.PathLike) -> list[Path]:
    """Remove the temporaries of ``target`` left by a process of this machine that no longer runs.

    Temporaries are named ``.<name>.<pid>.<random>.tmp``; one is removed only when no process
    has that pid and it has not been modified for a minute (so a writer on another machine
    sharing the folder, whose pid means nothing here, is left alone while it writes). A killed
    command (SIGKILL, a power cut) leaves such files; the next write of the same output sweeps them.

    Example:
        >>> sweep_stale_temporaries("faulty.onnx")
        []
    """
    target = Path(target)
    removed = []
    prefix = f".{target.name}."
    try:
        names = [n for n in os.listdir(target.parent) if n.startswith(prefix) and n.endswith(".tmp")]
    except OSError:
        return removed
    for name in names:
        pid = name[len(prefix):].split(".", 1)[0]
        entry = target.parent / name
        try:
            if not pid.isdigit() or _alive(int(pid)) or time.time() - entry.lstat().st_mtime < STALE_SECONDS:
                continue
            entry.unlink()
        except OSError:
            continue
        removed.append(entry)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    Example:
        >>> with atomic_path("out.bin") as tmp:
        ...     _ = tmp.write_bytes(b"done")
    """
    with atomic_paths(path) as (temporary,):
        yield temporary


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically.

    Example:
        >>> write_bytes_atomic("x.bin", b"\\x00\\x01")
    """
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_files_atomic(contents: dict[Path, bytes]) -> None:
    """Write several files (path -> bytes) so that they are all new or all old: temporaries, renamed together.

    Example:
        >>> write_files_atomic({Path("a.json"): b"{}", Path("a.md"): b"# a"})
    """
    with atomic_paths(*contents) as temporaries:
        for temporary, content in zip(temporaries, contents.values()):
            temporary.write_bytes(content)


@contextlib.contextmanager
def output_folder(folder: str | os.PathLike, keep: Callable[[], bool] | None = None) -> Iterator[Path]:
    """Within the block ``folder`` exists; if the block fails, what it created there is removed again.

    Entries that were there before stay untouched; a folder that did not exist is removed with
    its new contents. ``keep``, asked on failure, can keep everything (e.g. results worth
    resuming from).

    Example:
        >>> with output_folder("run") as out:
        ...     write_json_atomic(out / "metrics.json", {"accuracy": 0.98})
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise EdgefaultError(f"{folder}: exists and is not a folder")
    before = set(os.listdir(folder)) if folder.exists() else set()
    created = _make_folders(folder)
    try:
        yield folder
    except BaseException:
        if keep is None or not keep():
            for name in sorted(set(os.listdir(folder)) - before):
                if is_lock_file(name):  # another process's lock: its holder removes it
                    continue
                entry = folder / name
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        entry.unlink()
            _remove_empty(created)
        raise


def check_replaceable(path: str | os.PathLike, option: str = "") -> Path:
    """Refuse an existing output that is not a regular file or a symlink (a device, FIFO or socket).

    Writing renames a temporary file onto the path, which would replace ``/dev/null`` itself;
    a symlink is replaced as a link (its target stays untouched).

    Example:
        >>> check_replaceable("/dev/null", "--out")
        Traceback (most recent call last):
        ...
        edgefault.errors.EdgefaultError: --out /dev/null is a character device, not a regular file; give a file path
    """
    path = Path(path)
    try:
        mode = path.lstat().st_mode
    except OSError:  # missing (the usual case), or unreadable: the write reports it
        return path
    if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode) or stat.S_ISDIR(mode)):  # folders: refused by the callers
        label = f"{option} {printable(path)}" if option else printable(path)
        raise EdgefaultError(f"{label} is {file_kind(mode)}, not a regular file; give a file path")
    return path


def check_writable(path: str | os.PathLike, option: str = "`out`") -> Path:
    """Refuse an output file whose nearest existing folder cannot be written, before any slow work.

    Example:
        >>> check_writable("new/model.onnx")
        PosixPath('new/model.onnx')
    """
    target = Path(path)
    _check_folder_writable(target.parent, f"{option} {target}")
    return target


def _check_folder_writable(folder: Path, what: str) -> None:
    while not folder.exists():  # missing folders are created with the first file; the first existing one decides
        folder = folder.parent
    if not folder.is_dir():
        raise EdgefaultError(f"{what}: cannot write there, {folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):  # a read-only mount shows here even for root
        raise EdgefaultError(f"{what}: cannot write there, {folder} is read-only or not writable")


def protected_files(inputs: Iterable[str | os.PathLike]) -> dict[Path, str]:
    """The resolved files a command must not overwrite, each with what it is, for the given inputs.

    An input file protects itself and, for an ONNX model, its external data files; an input
    folder (a run) protects the files in it, its checkpoint among them.

    Example:
        >>> protected_files(["model.onnx"]) == {Path("model.onnx").resolve(): "an input file"}
        True
    """
    found: dict[Path, str] = {}
    for given in inputs:
        path = Path(given)
        if path.is_dir():
            for entry in sorted(path.iterdir()):
                if entry.is_file():
                    found.setdefault(entry.resolve(), f"the {entry.name} of the input run {path}")
            continue
        found.setdefault(path.resolve(), "an input file")
        if path.suffix == ".onnx" and path.is_file():
            for location in external_data_files(path):
                found.setdefault(location, f"the external data of the input {path}")
    return found


def check_outputs(outputs: dict[str, str | os.PathLike | None], inputs: Iterable[str | os.PathLike]) -> None:
    """Refuse outputs (option -> path) that land on an input, on each other, or on a folder.

    Example:
        >>> check_outputs({"--out": "faulty.onnx", "--map": "map.json"}, ["model.onnx"])
    """
    protected = protected_files(inputs)
    identities = {_identity(p): label for p, label in protected.items() if _identity(p) is not None}
    seen: dict[Path, str] = {}
    for option, given in outputs.items():
        if given is None:
            continue
        path = Path(given)
        resolved = path.resolve()
        label = protected.get(resolved) or identities.get(_identity(resolved))
        if label is not None:
            raise EdgefaultError(f"{option} {path} would overwrite {label}; choose another path")
        if resolved in seen:
            raise EdgefaultError(f"{option} and {seen[resolved]} are the same file {path}; give two paths")
        if path.is_dir():
            raise EdgefaultError(f"{option} {path} is a folder; give the path of the file to write")
        seen[resolved] = option
        check_replaceable(path, option)
        check_writable(path, option)


def check_output_folder(folder: str | os.PathLike, inputs: Iterable[str | os.PathLike], option: str = "`out`") -> Path:
    """Refuse an output folder that is an input, holds an input, or cannot be written.

    Example:
        >>> check_output_folder("new-run", ["model.onnx"])
        PosixPath('new-run')
    """
    path = Path(folder)
    resolved = path.resolve()
    for protected, label in protected_files(inputs).items():
        if protected == resolved or resolved in protected.parents:
            raise EdgefaultError(f"{option} {path} holds {label}; give a folder of its own")
    for given in inputs:
        if Path(given).resolve() == resolved:
            raise EdgefaultError(f"{option} {path} is an input folder; give a folder of its own")
    if path.exists() and not path.is_dir():
        raise EdgefaultError(f"{option} {path} is a file; give a folder")
    _check_folder_writable(path, f"{option} {path}")
    return path


def _identity(path: Path) -> tuple[int, int] | None:
    """Device and inode of an existing file (catches hard links), else None."""
    try:
        status = path.stat()
    except OSError:
        return None
    return status.st_dev, status.st_ino


def _json_default(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return value.tolist()
    raise TypeError(f"cannot serialise {type(value).__name__} to JSON")


def to_json(value: Any) -> str:
    """Serialise dataclasses, paths and numpy values to indented JSON.

    Example:
        >>> to_json({"a": 1})
        '{\\n  "a": 1\\n}'
    """
    return json.dumps(value, indent=2, default=_json_default)


PNG_DPI = 120  # every plot edgefault writes


def write_png_atomic(path: str | os.PathLike, figure: Any) -> Path:
    """Write a matplotlib figure as a PNG (``PNG_DPI``) atomically; close it if pyplot made it.

    Example:
        >>> from matplotlib.figure import Figure
        >>> figure = Figure(figsize=(1, 1))
        >>> write_png_atomic("plot.png", figure).read_bytes()[:4]
        b'\\x89PNG'
    """
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=PNG_DPI)
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:
        pyplot.close(figure)
    write_bytes_atomic(path, buffer.getvalue())
    return Path(path)


def json_bytes(value: Any) -> bytes:
    """The bytes of a JSON file holding ``value`` (indented, one final newline).

    Example:
        >>> json_bytes({"a": 1}).decode().splitlines()
        ['{', '  "a": 1', '}']
    """
    return (to_json(value) + "\n").encode()


def write_json_atomic(path: str | os.PathLike, value: Any) -> None:
    """Write ``value`` as JSON to ``path`` atomically.

    Example:
        >>> write_json_atomic("x.json", {"accuracy": 0.98})
    """
    write_bytes_atomic(path, json_bytes(value))
