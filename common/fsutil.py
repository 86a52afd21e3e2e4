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


@contextmanager
def atomic_dir(final: str) -> Iterator[str]:
    """Yield a fresh temporary directory beside ``final``; on success it replaces ``final``
    (whose old content is removed), on error it is deleted and ``final`` is untouched."""
    parent = os.path.dirname(os.path.abspath(final))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(final)}.tmp-", dir=parent)
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700
        yield tmp
        old = None
        if os.path.exists(final):
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
