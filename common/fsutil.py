"""Atomic writes (a run or a conversion never leaves a half-written file or directory), and the
JSON reader whose failures are one-line user errors."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from typing import Any, Iterator

from common.errors import UserError


def _not_a_file(final: str) -> None:
    if os.path.exists(final) and not os.path.isdir(final):
        raise UserError(f"{final}: exists and is not a directory")


def check_output_dir(final: str, inputs: tuple[str, ...], marks: tuple[str, ...]) -> None:
    """Refuse (:class:`UserError`), before any work, an output directory that :func:`atomic_dir` should not
    replace: one of ``inputs`` or a directory holding one (an output inside an input only adds to it), or a
    non-empty directory without the ``marks`` every earlier output of the caller has (not its output)."""
    out = os.path.realpath(final)
    for path in inputs:
        src = os.path.realpath(path)
        if src == out or src.startswith(out.rstrip(os.sep) + os.sep):
            where = "is the input" if src == out else "holds the input"
            raise UserError(f"{final}: the output directory {where} {path}; writing it would delete the input "
                            "(choose another output directory)")
    _not_a_file(final)
    missing = [name for name in marks if not os.path.exists(os.path.join(final, name))]
    if missing and os.path.isdir(final) and os.listdir(final):
        raise UserError(f"{final}: not empty and not an earlier output (no {', '.join(missing)}): choose another "
                        "directory or empty it")


@contextmanager
def atomic_dir(final: str, owned: tuple[str, ...] = ()) -> Iterator[str]:
    """Yield a fresh temporary directory beside ``final``; on success it replaces ``final``, on error it is
    deleted and ``final`` is untouched.

    An existing ``final`` is replaced only when nothing would be lost: every entry in it is one the new output
    has, or one of ``owned`` (what the caller writes only sometimes). So an earlier output is replaced and anything
    else (a user's folder, a training run, a note added to an earlier output) is a :class:`UserError`."""
    _not_a_file(final)
    parent = os.path.dirname(os.path.abspath(final))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(final)}.tmp-", dir=parent)
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700
        yield tmp
        old = None
        if os.path.exists(final):
            foreign = sorted(set(os.listdir(final)) - set(os.listdir(tmp)) - set(owned))
            if foreign:
                raise UserError(f"{final}: not replaced: it holds {', '.join(foreign[:3])}"
                                f"{f' and {len(foreign) - 3} more' if len(foreign) > 3 else ''}, which this output "
                                "does not have (not an earlier output of this tool? choose another directory "
                                "or empty it)")
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(final)}.old-", dir=parent)
            os.replace(final, os.path.join(old, "previous"))
        os.replace(tmp, final)
        if old:
            shutil.rmtree(old)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp)


def read_json(path: str) -> Any:
    """The parsed JSON file; a missing file or invalid JSON is a :class:`UserError`."""
    if not os.path.isfile(path):
        raise UserError(f"{path}: file not found")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from None


def read_runs(folder: str, name: str, keys: tuple[str, ...], tool: str) -> list[tuple[str, dict]]:
    """(subfolder path, parsed ``name``) for each of ``folder``'s subfolders, by name, that holds ``name``: a
    measuring ``tool``'s result, a JSON object with ``keys``. A missing folder, a result without them, or no result
    at all is a :class:`UserError`."""
    if not os.path.isdir(folder):
        raise UserError(f"{folder}: not a directory")
    runs = []
    for sub in sorted(os.listdir(folder)):
        path = os.path.join(folder, sub, name)
        if not os.path.isfile(path):
            continue
        result = read_json(path)
        if not (isinstance(result, dict) and set(keys) <= result.keys()):
            article = "an" if tool[0] in "aeiou" else "a"
            raise UserError(f"{path}: not {article} {tool} result (needs {', '.join(keys[:-1])} and {keys[-1]})")
        runs.append((os.path.dirname(path), result))
    if not runs:
        raise UserError(f"{folder}: no {name} in its subfolders (run {tool} --output_dir {folder}/NAME)")
    return runs


def write_text(path: str, text: str) -> None:
    """Write ``text`` through a temporary file and a rename."""
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def write_json(path: str, obj: Any) -> None:
    """Write ``obj`` as indented JSON through a temporary file and a rename."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_report(output_dir: str, name: str, args: dict, result: dict, markdown: str) -> None:
    """A measuring tool's output, replacing ``output_dir`` atomically: args.json, ``name``.json and
    ``name``.md."""
    with atomic_dir(output_dir) as out:
        write_json(os.path.join(out, "args.json"), args)
        write_json(os.path.join(out, f"{name}.json"), result)
        with open(os.path.join(out, f"{name}.md"), "w", encoding="utf-8") as f:
            f.write(markdown)
