"""Atomic output files (written under a temporary name beside the target, renamed when complete) and
reading JSON objects with one-line errors."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterator

from .errors import SpesError

_being_written: set[str] = set()  # temporary files of the outputs being written now
_interrupt_hooks: list[Callable[[], None]] = []


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[str]:
    """Yields a temporary path to write; on success it replaces ``path``, on any error it is removed."""
    path = os.path.abspath(os.fspath(path))
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        raise SpesError(f"output directory does not exist: {directory}")
    suffix = os.path.splitext(path)[1]
    fd, tmp = tempfile.mkstemp(prefix=".spes-jax-", suffix=suffix, dir=directory)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
    _being_written.add(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    finally:
        _being_written.discard(tmp)


def remove_partial_outputs() -> None:
    """Deletes the temporary files of outputs still being written (by any thread): for a process
    about to end without unwinding them, e.g. on Ctrl-C."""
    for tmp in list(_being_written):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


@contextlib.contextmanager
def keep_on_interrupt(hook: Callable[[], None]) -> Iterator[None]:
    """Within it, Ctrl-C on the command line runs ``hook`` before the process ends (from the main
    thread, while the command's thread goes on: the hook must be thread-safe), e.g. to commit the work
    already finished."""
    _interrupt_hooks.append(hook)
    try:
        yield
    finally:
        _interrupt_hooks.remove(hook)


def run_interrupt_hooks() -> None:
    """Runs the hooks of ``keep_on_interrupt``; an error is printed, not raised: the process is ending."""
    for hook in list(_interrupt_hooks):
        try:
            hook()
        except (OSError, SpesError) as e:
            print(f"spes-jax: error: {e}", file=sys.stderr)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_output(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)


def write_json(path: str | os.PathLike, payload) -> None:
    with atomic_output(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=1, ensure_ascii=False)


def read_json(path: str | os.PathLike) -> dict:
    """A JSON file holding an object; a missing, unreadable or malformed file is a ``SpesError``."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as e:
        raise SpesError(f"cannot read {path}: {e.strerror or e}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SpesError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise SpesError(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data


def check_output(path: str | os.PathLike, overwrite: bool = False, flag: str = "--out") -> str:
    """Refuses an output path before any work is done: a directory, a missing or read-only folder, or
    an existing file without ``overwrite``. Returns the absolute path."""
    path = os.path.abspath(os.fspath(path))
    if os.path.isdir(path):
        raise SpesError(f"{flag} {path}: is a directory; give a file name")
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        raise SpesError(f"{flag} {path}: output directory does not exist: {parent}")
    if not os.access(parent, os.W_OK):
        raise SpesError(f"{flag} {path}: cannot write into {parent}")
    if os.path.exists(path) and not overwrite:
        raise SpesError(f"{flag} {path}: exists; pass --overwrite to replace it")
    return path
