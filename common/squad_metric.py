"""The official SQuAD evaluation: ``evaluate-v2.0.py`` and ``evaluate-v1.1.py``, same numbers.

Gold answers come as ``{question id: [answer texts]}`` (no texts: unanswerable). Scores are in
percent. v2.0: ``exact``/``f1``/``total`` with ``HasAns_*``/``NoAns_*``; with null odds (or no-answer
probabilities) the answers whose odds exceed ``na_prob_thresh`` count as "no answer", and
``best_exact``/``best_f1`` and their thresholds come from the official ``find_best_thresh``.
v1.1: ``exact_match`` and ``f1``; a missing prediction scores 0.
"""
from __future__ import annotations

import re
import string
from collections import Counter

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = set(string.punctuation)


def normalize_answer(s: str) -> str:
    """Lower case, drop punctuation and the articles a/an/the, collapse whitespace."""
    s = "".join(ch for ch in s.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", s).split())


def _f1(gold_tokens: list[str], pred_tokens: list[str]) -> float:
    common = Counter(gold_tokens) & Counter(pred_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(pred_tokens)
    recall = num_same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def compute_exact(gold: str, pred: str) -> int:
    return int(normalize_answer(gold) == normalize_answer(pred))


def compute_f1(gold: str, pred: str) -> float:
    """Token F1 (v2.0 script): 1 when both are empty after normalisation, 0 when only one is."""
    gold_tokens, pred_tokens = normalize_answer(gold).split(), normalize_answer(pred).split()
    if not gold_tokens or not pred_tokens:
        return float(gold_tokens == pred_tokens)
    return _f1(gold_tokens, pred_tokens)


def _eval_dict(exact: dict, f1: dict, qids: list[str]) -> dict:
    total = len(qids)
    return {
        "exact": 100.0 * sum(exact[q] for q in qids) / total,
        "f1": 100.0 * sum(f1[q] for q in qids) / total,
        "total": total,
    }


def find_best_thresh(preds: dict, scores: dict, na_probs: dict, has_ans: dict) -> tuple[float, float]:
    """Best score (percent) over no-answer thresholds, and that threshold (official algorithm)."""
    cur_score = best_score = sum(1 for q in has_ans if not has_ans[q])
    best_thresh = 0.0
    for qid in sorted(na_probs, key=lambda k: na_probs[k]):
        if qid not in scores:
            continue
        if has_ans[qid]:
            diff = scores[qid]
        else:
            diff = -1 if preds[qid] else 0
        cur_score += diff
        if cur_score > best_score:
            best_score, best_thresh = cur_score, na_probs[qid]
    return 100.0 * best_score / len(scores), best_thresh


def squad_v2_metrics(
    gold: dict[str, list[str]],
    preds: dict[str, str],
    na_probs: dict[str, float] | None = None,
    na_prob_thresh: float = 1.0,
) -> dict:
    """The ``evaluate-v2.0.py`` output for ``preds`` (every gold question needs a prediction)."""
    missing = [q for q in gold if q not in preds]
    if missing:
        raise ValueError(f"no prediction for {len(missing)} of {len(gold)} questions (e.g. {missing[0]})")
    missing = [q for q in gold if na_probs is not None and q not in na_probs]
    if missing:
        raise ValueError(f"no null odds for {len(missing)} of {len(gold)} questions (e.g. {missing[0]})")
    has_ans = {q: bool(answers) for q, answers in gold.items()}
    exact_raw, f1_raw = {}, {}
    for qid, answers in gold.items():
        texts = [a for a in answers if normalize_answer(a)] or [""]
        exact_raw[qid] = max(compute_exact(a, preds[qid]) for a in texts)
        f1_raw[qid] = max(compute_f1(a, preds[qid]) for a in texts)
    exact, f1 = exact_raw, f1_raw
    if na_probs is not None:
        no_answer = {q for q in gold if na_probs[q] > na_prob_thresh}
        exact = {q: float(not has_ans[q]) if q in no_answer else s for q, s in exact_raw.items()}
        f1 = {q: float(not has_ans[q]) if q in no_answer else s for q, s in f1_raw.items()}
    out = _eval_dict(exact, f1, list(gold))
    for prefix, qids in (("HasAns", [q for q in gold if has_ans[q]]), ("NoAns", [q for q in gold if not has_ans[q]])):
        if qids:
            out.update({f"{prefix}_{k}": v for k, v in _eval_dict(exact, f1, qids).items()})
    if na_probs is not None:
        out["best_exact"], out["best_exact_thresh"] = find_best_thresh(preds, exact_raw, na_probs, has_ans)
        out["best_f1"], out["best_f1_thresh"] = find_best_thresh(preds, f1_raw, na_probs, has_ans)
    return out


def squad_v1_metrics(gold: dict[str, list[str]], preds: dict[str, str]) -> dict:
    """The ``evaluate-v1.1.py`` output: ``exact_match`` and ``f1`` in percent."""
    exact = f1 = 0.0
    for qid, answers in gold.items():
        if qid not in preds:
            continue  # scores 0, as the official script
        pred = preds[qid]
        exact += max(normalize_answer(pred) == normalize_answer(a) for a in answers)
        f1 += max(_f1(normalize_answer(a).split(), normalize_answer(pred).split()) for a in answers)
    return {"exact_match": 100.0 * exact / len(gold), "f1": 100.0 * f1 / len(gold)}
