"""BERT encoding that matches Hugging Face's fast (Rust) tokenizer, on a PaddleNLP tokenizer.

PaddleNLP's ``BertTokenizer.__call__`` differs from ``BertTokenizerFast``:

* pair truncation (``longest_first``) drops one token at a time from the longer sequence, where
  Rust computes both target lengths at once; they disagree on odd budgets (:func:`truncated_lengths`);
* ``get_offset_mapping`` re-finds each token's text in a per-character normalised copy of the
  input, so an ``[UNK]`` (emoji, fullwidth letters, words over 100 characters) gets the whole gap
  to the next token (spaces included), consecutive ``[UNK]``s get one character each, and the
  token after an ``[UNK]`` can be found inside the unknown word;
* its pre-tokeniser also splits on non-ASCII symbols (``€100``, ``x™y``, ``a😀b``), Rust's does not.

:func:`encode` re-implements the Rust ``BertNormalizer`` and ``BertPreTokenizer`` keeping, for each
normalised character, the index of the source character it came from, then runs the PaddleNLP
tokenizer's own WordPiece on each word and its own special-token builders. Categories come from
Python's ``unicodedata``; Rust's tables are older (Unicode 8), so the ~500 marks, punctuation and
format characters added or re-categorised since (U+061D, Adlam marks, ...) still tokenise differently.
"""
from __future__ import annotations

import re
import string
import unicodedata
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from paddlenlp.transformers import PretrainedTokenizer

# CJK ranges of the Rust BertNormalizer (tokenizers/src/normalizers/bert.rs): note 0x2B920, not the
# 0x2B820 of the Python BasicTokenizer.
_CJK = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
        (0x2B920, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))


# What Rust's ``is_control`` drops: control, format, private-use, surrogate; unassigned (Cn) is kept.
_CONTROL = frozenset(("Cc", "Cf", "Co", "Cs"))


def _is_cjk(char: str) -> bool:
    cp = ord(char)
    return any(lo <= cp <= hi for lo, hi in _CJK)


def _is_punctuation(char: str) -> bool:
    """Rust ``is_bert_punc``: ASCII punctuation or a Unicode P* category (other symbols are not)."""
    return char in string.punctuation or unicodedata.category(char).startswith("P")


def _nfd(chars: list[str], source: list[int]) -> tuple[list[str], list[int]]:
    """NFD of ``chars`` with Rust's alignment, which is positional: each character is decomposed,
    the marks are put in canonical order across characters, then the k-th output character that
    starts a decomposition takes the source of the k-th input character, and the others (the
    inserted ones) that of the last taken. A mark moved before another thus takes its place."""
    out = [(d, k > 0) for char in chars for k, d in enumerate(unicodedata.normalize("NFD", char))]
    start = 0
    while start < len(out):  # stable sort of each run of non-starters by combining class
        end = start
        while end < len(out) and unicodedata.combining(out[end][0]):
            end += 1
        out[start:end] = sorted(out[start:end], key=lambda item: unicodedata.combining(item[0]))
        start = end + 1
    new_source, taken = [], -1
    for _, inserted in out:
        taken += not inserted
        new_source.append(source[taken])
    return [d for d, _ in out], new_source


def normalize(text: str, lowercase: bool, strip_accents: bool, cjk: bool) -> tuple[str, list[int]]:
    """The Rust ``BertNormalizer`` on ``text``: the normalised text and, for each of its characters,
    the index in ``text`` of the character it comes from.

    In order: drop NUL, U+FFFD and control/format/private-use characters (not tab, CR, LF), map
    whitespace to a space; pad CJK ideographs with spaces; NFD and drop non-spacing marks; lowercase
    character by character (no final-sigma rule)."""
    chars: list[str] = []
    source: list[int] = []
    for i, char in enumerate(text):
        if char in "\x00\ufffd" or (char not in "\t\n\r" and unicodedata.category(char) in _CONTROL):
            continue
        new = " " if char.isspace() else f" {char} " if cjk and _is_cjk(char) else char
        chars.extend(new)
        source.extend([i] * len(new))
    if strip_accents:
        chars, source = _nfd(chars, source)
        kept = [k for k, char in enumerate(chars) if unicodedata.category(char) != "Mn"]
        chars, source = [chars[k] for k in kept], [source[k] for k in kept]
    if lowercase:
        lowered = [char.lower() for char in chars]
        chars, source = list("".join(lowered)), [i for low, i in zip(lowered, source) for _ in low]
    return "".join(chars), source


def pre_tokenize(text: str) -> list[tuple[int, int]]:
    """The Rust ``BertPreTokenizer``: (start, end) of each word of ``text``, split on whitespace
    (dropped) and punctuation (kept, one character a word)."""
    words: list[tuple[int, int]] = []
    start = None
    for i, char in enumerate(text):
        if char.isspace() or _is_punctuation(char):
            if start is not None:
                words.append((start, i))
                start = None
            if not char.isspace():
                words.append((i, i + 1))
        elif start is None:
            start = i
    if start is not None:
        words.append((start, len(text)))
    return words


def tokenize(tokenizer: PretrainedTokenizer, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids of ``text`` (no special tokens added) and their (start, end) character offsets.

    Special tokens written in the text (``[SEP]``) are matched first, as Rust does for its
    un-normalised added tokens; the rest is normalised, split into words and WordPiece'd by the
    PaddleNLP tokenizer. An unknown word is one ``[UNK]`` spanning the whole word."""
    basic = tokenizer.basic_tokenizer
    lowercase = basic.do_lower_case
    strip_accents = lowercase if basic.strip_accents is None else basic.strip_accents
    specials = sorted(tokenizer.all_special_tokens, key=len, reverse=True)
    ids: list[int] = []
    offsets: list[tuple[int, int]] = []
    base = 0
    # re.split with a group: plain text at even indices, the special tokens between them at odd ones.
    for k, segment in enumerate(re.split("(" + "|".join(map(re.escape, specials)) + ")", text)):
        if k % 2:
            ids.append(tokenizer.convert_tokens_to_ids(segment))
            offsets.append((base, base + len(segment)))
        else:
            normalized, source = normalize(segment, lowercase, strip_accents, basic.tokenize_chinese_chars)
            for start, end in pre_tokenize(normalized):
                pieces = tokenizer.wordpiece_tokenizer.tokenize(normalized[start:end])
                spans = [(start, end)]  # also the single [UNK] of an unknown word
                if pieces != [tokenizer.unk_token]:
                    spans, at = [], start
                    for j, piece in enumerate(pieces):
                        length = len(piece) - (2 if j else 0)  # "##" of continuing pieces
                        spans.append((at, at + length))
                        at += length
                ids.extend(tokenizer.convert_tokens_to_ids(pieces))
                offsets.extend((base + source[a], base + source[b - 1] + 1) for a, b in spans)
        base += len(segment)
    return ids, offsets


def truncated_lengths(n_first: int, n_second: int | None, budget: int) -> tuple[int, int | None]:
    """Lengths kept by Rust's ``longest_first`` truncation of sequences of ``n_first`` and
    ``n_second`` tokens (None: no pair) to ``budget`` tokens (special tokens excluded).

    With n1 <= n2 the shorter and longer lengths: the longer is cut to max(n1, budget - n1), or
    to n1 if n1 > budget; if that still overflows (n1 > budget / 2), the shorter keeps budget // 2
    and the longer budget // 2 + budget % 2, the first of equal lengths counting as the shorter.
    The Python tokenizers' one-token-at-a-time loop agrees except when the budget is odd, both
    lengths exceed budget / 2 and the first is not the longer: they give the odd token to the first.
    """
    if budget < 0:  # max_length below the special tokens: Rust (and so transformers) does not truncate
        return n_first, n_second
    if n_second is None:
        return min(n_first, budget), None
    if n_first + n_second <= budget:
        return n_first, n_second
    swap = n_first > n_second
    n1, n2 = (n_second, n_first) if swap else (n_first, n_second)
    n2 = n1 if n1 > budget else max(n1, budget - n1)
    if n1 + n2 > budget:
        n1 = budget // 2
        n2 = n1 + budget % 2
    return (n2, n1) if swap else (n1, n2)


def encode(tokenizer: PretrainedTokenizer, text: str, pair: str | None = None,
           max_length: int | None = None) -> dict[str, list]:
    """``input_ids``, ``token_type_ids``, ``attention_mask`` and ``offset_mapping`` of ``text``
    (and ``pair``) exactly as ``BertTokenizerFast(text, pair, truncation=bool(max_length),
    max_length=max_length, return_offsets_mapping=True)`` gives them, with ``tokenizer`` a
    PaddleNLP BERT-style tokenizer (``BertTokenizer`` and its relatives) of the same vocabulary.

    An empty ``pair`` counts as no pair, as in transformers."""
    ids, offsets = tokenize(tokenizer, text)
    pair_ids, pair_offsets = tokenize(tokenizer, pair) if pair else (None, None)
    if max_length is not None:
        budget = max_length - tokenizer.num_special_tokens_to_add(pair=bool(pair))
        n, n_pair = truncated_lengths(len(ids), None if pair_ids is None else len(pair_ids), budget)
        ids, offsets = ids[:n], offsets[:n]
        if pair_ids is not None:
            pair_ids, pair_offsets = pair_ids[:n_pair], pair_offsets[:n_pair]
    input_ids = tokenizer.build_inputs_with_special_tokens(ids, pair_ids)
    return {
        "input_ids": input_ids,
        "token_type_ids": tokenizer.create_token_type_ids_from_sequences(ids, pair_ids),
        "attention_mask": [1] * len(input_ids),
        "offset_mapping": tokenizer.build_offset_mapping_with_special_tokens(offsets, pair_offsets),
    }
