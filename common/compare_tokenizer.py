"""The PaddleNLP tokenizer of a converted checkpoint against the HF (fast) tokenizer it came from.

Input ids, token type ids and offset mappings must be identical on real text, for single
sentences and pairs, truncated and not.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from dataclasses import dataclass
from typing import Iterable

from common.checkpoint import require_dir
from common.errors import UserError

# Hard cases besides the real text: accents, CJK, emoji, very long words, control characters.
STRESS = (
    "Héllo wörld — café, naïve coöperation, Øresund, São Paulo, İstanbul, ﬁnancial",
    "東京は日本の首都です。北京欢迎你！서울 특별시",
    "I love it 😀😀 👍🏽 ❤️ 🇫🇷 — emoji in the middle😀of words",
    "supercalifragilisticexpialidocious" * 8 + " pneumonoultramicroscopicsilicovolcanoconiosis",
    "tab\there, bell\x07, null\x00, zero\u200bwidth, soft\u00adhyphen, nbsp\u00a0space, bom\ufeffmark",
    "Ｆｕｌｌｗｉｄｔｈ ｌｅｔｔｅｒｓ and ½ ² ™ ﬀ symbols; URLs like https://example.com/a?b=c&d=e",
    "   leading and trailing spaces   ",
    "Mixed: Naïve Bayes (p < 0.05) — “quotes” ‘single’ «guillemets» ... ellipsis…",
)


@dataclass
class Mismatch:
    case: str
    field: str
    torch: list
    paddle: list


def read_texts(path: str) -> list[str]:
    """Sentences from a .txt (one per line), a GLUE-style .tsv (first column after the header) or
    a SQuAD .json file (every context and question)."""
    if not os.path.isfile(path):
        raise UserError(f"{path}: no such file")
    if path.endswith(".json"):
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)["data"]
        except (json.JSONDecodeError, KeyError) as exc:
            raise UserError(f"{path}: not a SQuAD JSON file ({exc})") from None
        texts = []
        for article in data:
            for para in article["paragraphs"]:
                texts.append(para["context"])
                texts.extend(qa["question"] for qa in para["qas"])
        return texts
    with open(path, encoding="utf-8", newline="") as f:
        if path.endswith(".tsv"):
            rows = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            next(rows, None)
            return [row[0] for row in rows if row]
        return [line.rstrip("\n") for line in f if line.strip()]


def cases(texts: list[str], max_length: int) -> Iterable[tuple[str, str, str | None, int | None]]:
    """(name, text, pair, truncation length): every text alone, truncated and not, and
    consecutive texts as pairs, truncated and not."""
    for i, text in enumerate(texts):
        yield f"single[{i}]", text, None, None
        yield f"single[{i}] max_length={max_length}", text, None, max_length
        pair = texts[(i + 1) % len(texts)]
        yield f"pair[{i}]", text, pair, None
        yield f"pair[{i}] max_length={max_length}", text, pair, max_length


def compare_tokenizers(torch_dir: str, paddle_dir: str, texts: list[str], max_length: int = 32,
                       ours: bool = False) -> tuple[int, list[Mismatch]]:
    """(number of cases, mismatches) over :func:`cases` of ``texts``; ``ours``: encode with
    :func:`common.tokenization.encode` on the PaddleNLP tokenizer instead of calling it."""
    import transformers
    from paddlenlp.transformers import AutoTokenizer

    from common.tokenization import encode

    hf = transformers.AutoTokenizer.from_pretrained(torch_dir, use_fast=True)
    if not hf.is_fast:
        raise UserError(f"{torch_dir}: no fast tokenizer available (needed for offset mappings)")
    pd = AutoTokenizer.from_pretrained(paddle_dir)
    n, mismatches = 0, []
    for name, text, pair, length in cases(texts, max_length):
        kwargs = dict(return_offsets_mapping=True, return_token_type_ids=True)
        if length:
            kwargs.update(truncation=True, max_length=length)
        else:
            kwargs.update(truncation=False)
        a = hf(text, pair, **kwargs)
        b = encode(pd, text, pair, length) if ours else pd(text, pair, **kwargs)
        n += 1
        for key in ("input_ids", "token_type_ids", "offset_mapping"):
            ta = [tuple(x) if isinstance(x, (list, tuple)) else x for x in a[key]]
            tb = [tuple(x) if isinstance(x, (list, tuple)) else x for x in b[key]]
            if ta != tb:
                mismatches.append(Mismatch(f"{name}: {text[:60]!r}" + (f" / {pair[:30]!r}" if pair else ""), key, ta, tb))
                break
    return n, mismatches


def compare_tokenizer_main(description: str, argv: list[str] | None = None) -> int:
    """CLI shared by ``<model>/compare_tokenizer.py``; returns the exit code (1 on any mismatch)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--torch_dir", required=True, help="HF checkpoint directory (fast tokenizer)")
    parser.add_argument("--paddle_dir", required=True, help="converted PaddleNLP directory")
    parser.add_argument("--text_file", action="append", default=[],
                        help="real text: .txt (a line each), .tsv (first column) or SQuAD .json; repeatable")
    parser.add_argument("--max_length", type=int, default=32, help="length for the truncated variants")
    parser.add_argument("--show", type=int, default=5, help="mismatches printed")
    parser.add_argument("--ours", action="store_true",
                        help="also check common.tokenization.encode (what training uses); "
                             "the exit code then follows it")
    args = parser.parse_args(argv)
    require_dir(args.torch_dir, "--torch_dir")
    require_dir(args.paddle_dir, "--paddle_dir")
    texts = [t for path in args.text_file for t in read_texts(path)] + list(STRESS)
    for ours in (False, True) if args.ours else (False,):
        n, mismatches = compare_tokenizers(args.torch_dir, args.paddle_dir, texts, args.max_length, ours)
        for m in mismatches[: args.show]:
            print(f"MISMATCH {m.field} in {m.case}\n  torch : {m.torch}\n  paddle: {m.paddle}")
        fields = {f: sum(m.field == f for m in mismatches) for f in ("input_ids", "token_type_ids", "offset_mapping")}
        print(f"{'common.tokenization.encode' if ours else 'PaddleNLP tokenizer'}: texts={len(texts)} cases={n} "
              f"mismatches={len(mismatches)} " + " ".join(f"{k}={v}" for k, v in fields.items()))
    if mismatches:
        print("FAIL: the tokenizers disagree", file=sys.stderr)
        return 1
    print("OK: identical input_ids, token_type_ids and offset mappings")
    return 0
