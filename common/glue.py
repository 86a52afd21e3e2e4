"""GLUE tasks read from a local copy of the official GLUE download (TSV layout).

One table (:data:`_TASKS`, in the spirit of HF ``run_glue.py``'s ``TASK_TO_KEYS``)
describes where each task keeps its texts and label; :func:`read_split` is the one
generic reader. Files are read with ``csv.QUOTE_NONE``: GLUE text has unbalanced quotes.
"""
from __future__ import annotations

import csv
import logging
import math
import os
from dataclasses import dataclass
from typing import NamedTuple

from common.errors import UserError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Example:
    text_a: str
    text_b: str | None
    label: str | float  # str for classification tasks, float for stsb


@dataclass(frozen=True)
class GlueTask:
    name: str  # canonical, e.g. "sst2"
    labels: list[str] | None  # canonical label order; None for regression (stsb)
    metric_names: tuple[str, ...]  # reported separately, never averaged
    dev_splits: tuple[str, ...]  # ("dev",), or ("dev_matched", "dev_mismatched") for mnli

    @property
    def is_regression(self) -> bool:
        return self.labels is None

    @property
    def num_labels(self) -> int:
        return 1 if self.labels is None else len(self.labels)


class _Layout(NamedTuple):
    """Where a task's fields live: header names, or positions when ``width`` is set."""

    text_a: str | int
    text_b: str | int | None
    label: str | int
    labels: tuple[str, ...] | None
    metrics: tuple[str, ...]
    dev_splits: tuple[str, ...] = ("dev",)
    width: int | None = None  # headerless file with this many columns (CoLA)
    skip_malformed: bool = False  # skip and count bad rows instead of failing (QQP)


_BINARY = ("0", "1")
_NLI2 = ("entailment", "not_entailment")
_ACC = ("accuracy",)
_ACC_F1 = ("accuracy", "f1")

_TASKS: dict[str, _Layout] = {
    "cola": _Layout(3, None, 1, _BINARY, ("matthews_corr", "accuracy"), width=4),
    "sst2": _Layout("sentence", None, "label", _BINARY, _ACC),
    "mrpc": _Layout("#1 String", "#2 String", "Quality", _BINARY, _ACC_F1),
    "stsb": _Layout("sentence1", "sentence2", "score", None, ("pearson", "spearman")),
    "qqp": _Layout("question1", "question2", "is_duplicate", _BINARY, _ACC_F1, skip_malformed=True),
    "mnli": _Layout("sentence1", "sentence2", "gold_label",
                    ("contradiction", "entailment", "neutral"), _ACC,
                    dev_splits=("dev_matched", "dev_mismatched")),
    "qnli": _Layout("question", "sentence", "label", _NLI2, _ACC),
    "rte": _Layout("sentence1", "sentence2", "label", _NLI2, _ACC),
}
_ALIASES = {"sst-2": "sst2", "sts-b": "stsb"}


def get_task(name: str) -> GlueTask:
    """The task called ``name`` (case-insensitive; ``sst-2`` and ``sts-b`` accepted)."""
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in _TASKS:
        raise UserError(f"unknown task {name!r}; choose one of: {', '.join(_TASKS)}")
    layout = _TASKS[key]
    labels = None if layout.labels is None else list(layout.labels)
    return GlueTask(key, labels, layout.metrics, layout.dev_splits)


def read_split(data_dir: str, task: GlueTask | str, split: str) -> tuple[list[Example], int]:
    """Read ``<data_dir>/<split>.tsv``; return ``(examples, number of malformed rows skipped)``.

    ``split`` is ``"train"`` or one of ``task.dev_splits``. A malformed row (wrong field
    count, unknown label, non-float score) is a :class:`UserError`, except for QQP, whose
    official train.tsv has such rows: they are skipped, counted and warned about once.
    """
    if isinstance(task, str):
        task = get_task(task)
    layout = _TASKS[task.name]
    if split not in ("train", *task.dev_splits):
        raise UserError(f"unknown split {split!r} for task {task.name}; "
                        f"choose one of: {', '.join(('train', *task.dev_splits))}")
    if not os.path.isdir(data_dir):
        raise UserError(f"GLUE data directory not found: {data_dir}")
    path = os.path.join(data_dir, f"{split}.tsv")
    if not os.path.isfile(path):
        raise UserError(f"{task.name}: data file not found: {path}")

    examples: list[Example] = []
    skipped, first_bad = 0, None
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            rows = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            if layout.width is None:
                header = next(rows, None)
                if header is None:
                    raise UserError(f"{path}: empty file (expected a header line)")
                width = len(header)
                missing = [c for c in (layout.text_a, layout.text_b, layout.label)
                           if c is not None and c not in header]
                if missing:
                    raise UserError(f"{path}:1: header lacks column(s) {', '.join(missing)}")
                a, b, y = (None if c is None else header.index(c)
                           for c in (layout.text_a, layout.text_b, layout.label))
            else:
                width, a, b, y = layout.width, layout.text_a, layout.text_b, layout.label
            for row in rows:
                try:
                    examples.append(_parse_row(row, width, a, b, y, task.labels))
                except ValueError as exc:
                    if not layout.skip_malformed:
                        raise UserError(f"{path}:{rows.line_num}: {exc}") from None
                    skipped += 1
                    first_bad = first_bad or f"line {rows.line_num}: {exc}"
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not valid UTF-8 ({exc.reason})") from None
    except csv.Error as exc:  # e.g. a field over csv.field_size_limit()
        raise UserError(f"{path}: {exc}") from None
    if skipped:
        logger.warning("%s %s: skipped %d malformed rows (first at %s)",
                       task.name.upper(), path, skipped, first_bad)
    return examples, skipped


def _parse_row(row: list[str], width: int, a: int, b: int | None, y: int,
               labels: list[str] | None) -> Example:
    """One data row as an :class:`Example`; ``ValueError`` says what is wrong with it."""
    if len(row) != width:
        raise ValueError(f"expected {width} tab-separated fields, got {len(row)}")
    label: str | float = row[y]
    if labels is None:
        try:
            label = float(label)
        except ValueError:
            label = math.nan
        if not math.isfinite(label):
            raise ValueError(f"score {row[y]!r} is not a finite number")
    elif label not in labels:
        raise ValueError(f"unknown label {row[y]!r} (expected one of: {', '.join(labels)})")
    return Example(row[a], None if b is None else row[b], label)


def label_order(task: GlueTask, id2label: dict[int, str] | None) -> list[str] | None:
    """The task's labels in the checkpoint head's order (canonical spellings).

    ``id2label`` naming the task's labels (case-insensitive) gives them in id order;
    ``None`` or generic names (``LABEL_0``...) give the canonical order; anything else
    is a :class:`UserError`. Regression tasks give ``None``.
    """
    if task.labels is None:
        return None
    if id2label is None:
        return list(task.labels)
    problem = (f"checkpoint id2label {id2label} does not fit task {task.name} "
               f"(labels: {', '.join(task.labels)})")
    try:
        by_id = {int(k): str(v) for k, v in id2label.items()}
    except (TypeError, ValueError):
        raise UserError(problem) from None
    if sorted(by_id) != list(range(task.num_labels)):
        raise UserError(problem)
    names = [by_id[i].strip().lower() for i in range(task.num_labels)]
    if names == [f"label_{i}" for i in range(task.num_labels)]:
        return list(task.labels)
    canonical = {label.lower(): label for label in task.labels}
    if sorted(names) != sorted(canonical):
        raise UserError(problem)
    return [canonical[n] for n in names]
