"""Rotten Tomatoes snippets from the vaderSentiment sdist as a GLUE SST-2 style task.

Source: ``vaderSentiment==3.3.2`` (MIT) ships ``additional_resources/hutto_ICWSM_2014.tar.gz``,
whose ``movieReviewSnippets_GroundTruth.txt`` holds 10,605 snippets with mean human
ratings: UTF-8, CRLF line ends, no trailing newline, ``id<TAB>rating<TAB>text`` per line.

Labels: 1 if rating > 0, 0 if rating < 0; zero ratings are dropped.
Split: stratified by label. For label 0 then label 1, that label's ids are sorted as
strings and shuffled by one ``random.Random(seed)``; the first ``round(n * dev_fraction)``
go to dev. ``Random(int).shuffle`` is stable across machines and Python 3 versions.

Output (``train.tsv``, ``dev.tsv`` with header ``sentence<TAB>label``, rows in file
order, plus ``split.json``) can be read by the GLUE reader as task ``sst2``.

    python -m common.rotten_tomatoes --sdist vaderSentiment-3.3.2.tar.gz --output_dir data/rt
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import random
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from common.errors import UserError, cli
from common.fsutil import atomic_dir

OUTER_MEMBER = "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
INNER_MEMBER = "hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt"
SPLIT_RULE = ("stratified by label: per label (0, then 1) ids sorted as strings, "
              "shuffled by one random.Random(seed), first round(n * dev_fraction) to dev")


@dataclass(frozen=True)
class Snippet:
    """One snippet; ``text`` has its whitespace collapsed to single spaces."""

    id: str
    rating: float
    text: str


def _member_bytes(archive: bytes, member: str, where: str) -> bytes:
    """Return the bytes of ``member`` in the tar.gz ``archive`` (``where`` names it in errors)."""
    try:
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
            try:
                info = tar.getmember(member)
            except KeyError:
                raise UserError(f"{where}: no member {member!r}") from None
            handle = tar.extractfile(info)
            if handle is None:
                raise UserError(f"{where}: member {member!r} is not a regular file")
            return handle.read()
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise UserError(f"{where}: not a readable tar.gz archive ({exc})") from None


def _parse_line(line: str, where: str, lineno: int) -> Snippet:
    fields = line.split("\t")
    if len(fields) != 3:
        raise UserError(f"{where}, line {lineno}: expected 3 tab-separated fields "
                        f"(id, rating, text), got {len(fields)}")
    sid, raw_rating, raw_text = fields
    try:
        rating = float(raw_rating)
    except ValueError:
        rating = math.nan
    if not math.isfinite(rating):
        raise UserError(f"{where}, line {lineno}: rating {raw_rating!r} is not a finite number")
    text = " ".join(raw_text.split())
    if not sid.strip() or not text:
        raise UserError(f"{where}, line {lineno}: empty id or text")
    return Snippet(sid.strip(), rating, text)


def read_snippets(sdist_path: str) -> list[Snippet]:
    """Read the movie-review snippets from the nested tarballs of the sdist, in memory."""
    path = Path(sdist_path)
    if not path.is_file():
        raise UserError(f"{sdist_path}: no such file (the vaderSentiment-3.3.2 sdist tar.gz)")
    inner = _member_bytes(path.read_bytes(), OUTER_MEMBER, sdist_path)
    where = f"{sdist_path}:{OUTER_MEMBER}:{INNER_MEMBER}"
    data = _member_bytes(inner, INNER_MEMBER, f"{sdist_path}:{OUTER_MEMBER}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        lineno = data[:exc.start].count(b"\n") + 1
        raise UserError(f"{where}, line {lineno}: not valid UTF-8") from None
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    snippets, seen = [], set()
    for lineno, line in enumerate(lines, 1):
        snippet = _parse_line(line.removesuffix("\r"), where, lineno)
        if snippet.id in seen:
            raise UserError(f"{where}, line {lineno}: duplicate id {snippet.id!r}")
        seen.add(snippet.id)
        snippets.append(snippet)
    return snippets


def label_of(rating: float) -> int | None:
    """1 for a positive rating, 0 for a negative one, None (dropped) for zero."""
    if rating > 0:
        return 1
    if rating < 0:
        return 0
    return None


def split_dev_ids(labels: dict[str, int], dev_fraction: float, seed: int) -> set[str]:
    """Ids going to dev under the stratified, seeded rule in :data:`SPLIT_RULE`."""
    rng = random.Random(seed)
    dev: set[str] = set()
    for label in (0, 1):
        ids = sorted(i for i, lab in labels.items() if lab == label)
        rng.shuffle(ids)
        dev.update(ids[:round(len(ids) * dev_fraction)])
    return dev


def _sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _write_tsv(path: Path, rows: list[tuple[str, int]]) -> None:
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write("sentence\tlabel\n")
        f.writelines(f"{text}\t{label}\n" for text, label in rows)


def write_dataset(sdist_path: str, output_dir: str, dev_fraction: float = 0.2,
                  seed: int = 42) -> tuple[dict, bool]:
    """Build ``train.tsv``, ``dev.tsv`` and ``split.json`` in ``output_dir`` atomically.

    Returns the ``split.json`` content and whether anything was written: an existing
    ``output_dir`` with identical ``split.json`` and both TSVs is left alone.
    """
    if not 0 < dev_fraction < 1:
        raise UserError(f"--dev_fraction must be strictly between 0 and 1, got {dev_fraction}")
    snippets = read_snippets(sdist_path)
    labels = {s.id: lab for s in snippets if (lab := label_of(s.rating)) is not None}
    dev_ids = split_dev_ids(labels, dev_fraction, seed)
    rows: dict[str, list[tuple[str, int]]] = {"train": [], "dev": []}
    for s in snippets:
        if s.id in labels:
            rows["dev" if s.id in dev_ids else "train"].append((s.text, labels[s.id]))
    order = random.Random(seed + 1)  # rows shuffled so that --max_train_samples takes a fair subset
    for split_rows in rows.values():
        order.shuffle(split_rows)
    if not rows["train"] or not rows["dev"]:
        raise UserError(f"dev_fraction {dev_fraction} leaves an empty split "
                        f"({len(labels)} labelled snippets)")

    counts = {"total": len(snippets), "dropped_zero_rating": len(snippets) - len(labels)}
    for name, split_rows in rows.items():
        positives = sum(lab for _, lab in split_rows)
        counts[name] = {"size": len(split_rows), "positives": positives,
                        "negatives": len(split_rows) - positives}
    meta = {
        "source": {"sdist": Path(sdist_path).name, "sha256": _sha256(sdist_path),
                   "members": [OUTER_MEMBER, INNER_MEMBER]},
        "labels": "1 if rating > 0, 0 if rating < 0, rating == 0 dropped",
        "split": SPLIT_RULE,
        "row_order": "each split's rows shuffled with random.Random(seed + 1), train first",
        "seed": seed,
        "dev_fraction": dev_fraction,
        "counts": counts,
        "dev_ids": sorted(dev_ids),
    }
    meta_text = json.dumps(meta, indent=2, ensure_ascii=False) + "\n"

    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"{output_dir}: exists and is not a directory")
    if (out / "split.json").is_file() and (out / "train.tsv").is_file() \
            and (out / "dev.tsv").is_file() \
            and (out / "split.json").read_text(encoding="utf-8") == meta_text:
        return meta, False

    with atomic_dir(output_dir) as tmp:
        for name, split_rows in rows.items():
            _write_tsv(Path(tmp) / f"{name}.tsv", split_rows)
        (Path(tmp) / "split.json").write_text(meta_text, encoding="utf-8")
    return meta, True


def _summary(meta: dict, output_dir: str, written: bool) -> str:
    c = meta["counts"]
    tr, dv = c["train"], c["dev"]
    state = "wrote" if written else "unchanged (same split.json):"
    return (f"Rotten Tomatoes snippets: {c['total']} read from {meta['source']['sdist']}, "
            f"{c['dropped_zero_rating']} zero-rating dropped, "
            f"{tr['positives'] + dv['positives']} positive / "
            f"{tr['negatives'] + dv['negatives']} negative; "
            f"train {tr['size']} ({tr['positives']} pos / {tr['negatives']} neg), "
            f"dev {dv['size']} ({dv['positives']} pos / {dv['negatives']} neg) "
            f"with dev_fraction {meta['dev_fraction']}, seed {meta['seed']}; "
            f"{state} {output_dir}")


@cli
def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m common.rotten_tomatoes",
        description="Turn the Rotten Tomatoes snippets in the vaderSentiment-3.3.2 sdist into "
                    "a binary sentiment task in GLUE SST-2 layout (train.tsv, dev.tsv, "
                    "split.json). Label 1 if the mean rating > 0, 0 if < 0; zero dropped.")
    parser.add_argument("--sdist", required=True,
                        help="path to vaderSentiment-3.3.2.tar.gz (pip download --no-deps "
                             "--no-binary :all: vaderSentiment==3.3.2 -d DIR)")
    parser.add_argument("--output_dir", required=True,
                        help="directory to create or replace (atomically); left alone if "
                             "its split.json already matches")
    parser.add_argument("--dev_fraction", type=float, default=0.2,
                        help="fraction of each label's snippets held out as dev (default 0.2)")
    parser.add_argument("--seed", type=int, default=42, help="shuffle seed (default 42)")
    args = parser.parse_args(argv)
    meta, written = write_dataset(args.sdist, args.output_dir, args.dev_fraction, args.seed)
    print(_summary(meta, args.output_dir, written))


if __name__ == "__main__":
    main()
