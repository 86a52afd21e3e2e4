"""From start/end logits to answers, as the original BERT ``run_squad.py`` ``write_predictions``.

Per example, the ``n_best_size`` best start and end logits of every window give candidate spans
(inside the context, start where the window has the token's most context, end not before start,
at most ``max_answer_length`` tokens); the answer text is the exact substring of the original
context under the span's character offsets. For SQuAD v2.0 the null answer scores the [CLS]
logits of the window where they are lowest, and the question gets "" when
``score_null - best non-null score`` (its null odds) exceeds ``null_score_diff_threshold``.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from common.squad_data import SquadExample, SquadFeature


@dataclass
class SquadPredictions:
    predictions: dict[str, str] = field(default_factory=dict)  # question id -> answer text
    nbest: dict[str, list[dict]] = field(default_factory=dict)  # text, probability, start_logit, end_logit
    null_odds: dict[str, float] = field(default_factory=dict)  # v2.0 only


def _best_indexes(logits: np.ndarray, n: int) -> np.ndarray:
    return np.argsort(-logits, kind="stable")[:n]


def _softmax(scores: list[float]) -> np.ndarray:
    exp = np.exp(np.asarray(scores) - max(scores))
    return exp / exp.sum()


def postprocess(
    examples: list[SquadExample],
    features: list[SquadFeature],
    start_logits: Sequence[np.ndarray],
    end_logits: Sequence[np.ndarray],
    n_best_size: int = 20,
    max_answer_length: int = 30,
    version_2: bool = False,
    null_score_diff_threshold: float = 0.0,
) -> SquadPredictions:
    """Answers, n-best lists and (v2.0) null odds by question id; logits per feature, any padding after its tokens."""
    by_example = defaultdict(list)
    for i, feature in enumerate(features):
        by_example[feature.example_index].append(i)
    out = SquadPredictions()
    for index, example in enumerate(examples):
        candidates = []  # (start_logit, end_logit, char_start, char_end); char_start None: the null answer
        score_null, null_logits = np.inf, (0.0, 0.0)
        for i in by_example[index]:
            feature = features[i]
            size = len(feature.input_ids)
            start = np.asarray(start_logits[i][:size], dtype=np.float64)
            end = np.asarray(end_logits[i][:size], dtype=np.float64)
            if version_2 and start[0] + end[0] < score_null:
                score_null, null_logits = start[0] + end[0], (float(start[0]), float(end[0]))
            candidates += _spans(feature, start, end, n_best_size, max_answer_length)
        if version_2:
            candidates.append((*null_logits, None, None))
        candidates.sort(key=lambda c: c[0] + c[1], reverse=True)  # stable, as the original

        nbest, seen = [], set()
        for start_logit, end_logit, a, b in candidates:
            if len(nbest) >= n_best_size:
                break
            text = "" if a is None else example.context[a:b]
            if text not in seen:
                seen.add(text)
                nbest.append((text, start_logit, end_logit))
        if version_2 and "" not in seen:
            nbest.append(("", *null_logits))
        if not any(text for text, _, _ in nbest):  # no valid span at all: a nonce answer, as the original
            nbest.append(("empty", 0.0, 0.0))
        probs = _softmax([s + e for _, s, e in nbest])
        out.nbest[example.qid] = [
            {"text": t, "probability": float(p), "start_logit": s, "end_logit": e} for (t, s, e), p in zip(nbest, probs)
        ]
        best = next(entry for entry in nbest if entry[0])
        if version_2:
            odds = float(score_null - best[1] - best[2])
            out.null_odds[example.qid] = odds
            out.predictions[example.qid] = "" if odds > null_score_diff_threshold else best[0]
        else:
            out.predictions[example.qid] = nbest[0][0]
    return out


def _spans(feature: SquadFeature, start: np.ndarray, end: np.ndarray, n_best_size: int, max_answer_length: int):
    """Candidate (start_logit, end_logit, char_start, char_end) of one window."""
    found = []
    for s in _best_indexes(start, n_best_size):
        for e in _best_indexes(end, n_best_size):
            ks, ke = s - feature.context_start, e - feature.context_start
            if not (0 <= ks < len(feature.spans) and 0 <= ke < len(feature.spans)):
                continue
            if not feature.max_context[ks] or e < s or e - s + 1 > max_answer_length:
                continue
            found.append((float(start[s]), float(end[e]), feature.spans[ks][0], feature.spans[ke][1]))
    return found
