"""SQuAD v1.1 / v2.0 from local JSON files, and its document-stride model features.

Windows follow the original BERT ``run_squad.py``: ``[CLS] question [SEP] context window [SEP]``,
the question cut to ``max_query_length`` tokens, windows starting ``doc_stride`` tokens apart, and
each token marked in the window where it has the most context. Texts are tokenised as Hugging
Face's fast tokenizer does, with its exact character offsets (:mod:`common.tokenization`; PaddleNLP's
own offsets misplace ``[UNK]`` tokens); an answer outside a window, or no answer, points at
``[CLS]`` (index 0).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from common.errors import UserError
from common.fsutil import read_json
from common.tokenization import tokenize

if TYPE_CHECKING:
    from paddlenlp.transformers import PretrainedTokenizer


class Answer(NamedTuple):
    text: str
    start: int  # character position in the context


@dataclass(frozen=True)
class SquadExample:
    qid: str
    question: str
    context: str
    answers: tuple[Answer, ...]  # empty for an unanswerable (v2.0) question

    @property
    def is_impossible(self) -> bool:
        return not self.answers


@dataclass
class SquadFeature:
    """One window of one example: the model inputs and how to map its tokens back."""

    example_index: int
    input_ids: np.ndarray
    token_type_ids: np.ndarray
    context_start: int  # input index of the window's first context token
    # For prediction (empty in training features): per context token of the window, its character
    # span in the context and whether this window gives it the most context.
    spans: list[tuple[int, int]]
    max_context: list[bool]
    start_position: int = 0  # training target; 0 ([CLS]) when the answer is not in the window
    end_position: int = 0

    def model_inputs(self, with_positions: bool) -> dict:
        inputs = {"input_ids": self.input_ids, "token_type_ids": self.token_type_ids}
        if with_positions:
            inputs.update(start_positions=self.start_position, end_positions=self.end_position)
        return inputs


def read_squad(path: str, version_2: bool) -> list[SquadExample]:
    """The questions of a SQuAD file in the official format, in file order.

    Every answer must be found in its context at ``answer_start``. Without ``version_2`` an
    unanswerable (``is_impossible``) question is an error.
    """
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise UserError(f"{path}: not a SQuAD file (no top-level \"data\" list)")
    examples: list[SquadExample] = []
    seen: set[str] = set()
    try:
        for article in data["data"]:
            for paragraph in article["paragraphs"]:
                context = paragraph["context"]
                for qa in paragraph["qas"]:
                    example = _example(qa, context, version_2)
                    if example.qid in seen:
                        raise ValueError(f"question {example.qid}: the id appears twice")
                    seen.add(example.qid)
                    examples.append(example)
    except (KeyError, TypeError) as exc:
        raise UserError(f"{path}: not in the SQuAD format (missing or wrong field {exc})") from None
    except ValueError as exc:
        raise UserError(f"{path}: {exc}") from None
    return examples


def _example(qa: dict, context: str, version_2: bool) -> SquadExample:
    qid = str(qa["id"])
    impossible = bool(qa.get("is_impossible", False))
    answers = tuple(Answer(str(a["text"]), int(a["answer_start"])) for a in qa["answers"])
    if impossible and not version_2:
        raise ValueError(f"question {qid}: unanswerable (is_impossible) in a SQuAD v1.1 run; pass --version_2_with_negative")
    if impossible and answers:
        raise ValueError(f"question {qid}: is_impossible but has answers")
    if not impossible and not answers:
        raise ValueError(f"question {qid}: no answers (and not is_impossible)")
    for answer in answers:
        found = context[answer.start : answer.start + len(answer.text)] if answer.start >= 0 else ""
        if found != answer.text:
            raise ValueError(
                f"question {qid}: answer {answer.text!r} is not in the context at answer_start {answer.start} "
                f"(found {found!r})"
            )
    return SquadExample(qid=qid, question=qa["question"], context=context, answers=answers)


def windows(num_tokens: int, max_tokens: int, doc_stride: int) -> list[tuple[int, int]]:
    """(start, length) of the context windows: ``doc_stride`` apart, the last one reaching the end."""
    found, start = [], 0
    while True:
        length = min(num_tokens - start, max_tokens)
        found.append((start, length))
        if start + length >= num_tokens:
            return found
        start += min(length, doc_stride)


def _max_context(doc_windows: list[tuple[int, int]], index: int, position: int) -> bool:
    """Whether window ``index`` is the one giving token ``position`` most context (original BERT rule)."""
    best_score, best = None, None
    for i, (start, length) in enumerate(doc_windows):
        if not start <= position < start + length:
            continue
        score = min(position - start, start + length - 1 - position) + 0.01 * length
        if best_score is None or score > best_score:
            best_score, best = score, i
    return best == index


def _token_span(spans: list[tuple[int, int]], answer: Answer) -> tuple[int, int] | None:
    """First and last context tokens overlapping the answer's characters (None if none does)."""
    end = answer.start + len(answer.text)
    inside = [i for i, (a, b) in enumerate(spans) if a < end and b > answer.start]
    return (inside[0], inside[-1]) if inside else None


def make_features(
    examples: list[SquadExample],
    tokenizer: PretrainedTokenizer,
    max_seq_length: int,
    doc_stride: int,
    max_query_length: int,
    training: bool,
) -> list[SquadFeature]:
    """The windows of every example; ``training`` sets the answer positions (first answer)."""
    if max_seq_length <= max_query_length + 3:
        raise UserError(f"--max_seq_length ({max_seq_length}) must exceed --max_query_length ({max_query_length}) + 3")
    if doc_stride < 1:
        raise UserError(f"--doc_stride must be positive, got {doc_stride}")
    cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
    features: list[SquadFeature] = []
    context, doc_ids, doc_spans = None, [], []
    for index, example in enumerate(examples):
        if example.context is not context:  # questions of one paragraph share its tokens
            context = example.context
            doc_ids, doc_spans = tokenize(tokenizer, context)
        query_ids = tokenize(tokenizer, example.question)[0][:max_query_length]
        answer = _token_span(doc_spans, example.answers[0]) if training and example.answers else None
        doc_windows = windows(len(doc_ids), max_seq_length - len(query_ids) - 3, doc_stride)
        context_start = len(query_ids) + 2
        for w, (start, length) in enumerate(doc_windows):
            input_ids = [cls_id, *query_ids, sep_id, *doc_ids[start : start + length], sep_id]
            feature = SquadFeature(
                example_index=index,
                input_ids=np.array(input_ids, dtype=np.int64),
                token_type_ids=np.array([0] * context_start + [1] * (length + 1), dtype=np.int64),
                context_start=context_start,
                spans=[] if training else doc_spans[start : start + length],
                max_context=[] if training else [_max_context(doc_windows, w, p) for p in range(start, start + length)],
            )
            if answer and start <= answer[0] and answer[1] < start + length:
                feature.start_position = answer[0] - start + context_start
                feature.end_position = answer[1] - start + context_start
            features.append(feature)
    return features
