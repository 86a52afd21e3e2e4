"""numpy metrics against sklearn / scipy on fixed vectors."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from common.glue import get_task
from common.metrics import accuracy, f1, glue_metrics, matthews_corr, pearson, spearman

PREDS = np.array([1, 0, 1, 1, 0, 0, 1, 0, 1, 1, 0, 1])
LABELS = np.array([1, 0, 0, 1, 0, 1, 1, 0, 1, 0, 0, 1])
PREDS3 = np.array([0, 2, 1, 1, 0, 2, 2, 1, 0, 1, 2, 0, 1, 1])
LABELS3 = np.array([0, 2, 1, 0, 0, 1, 2, 1, 2, 1, 2, 0, 0, 1])
X = np.array([0.5, 2.0, 2.0, 3.5, 1.0, 4.0, 4.0, 4.0, 0.0, 5.0])  # ties
Y = np.array([1.2, 1.8, 2.5, 3.0, 0.7, 4.4, 3.9, 4.1, 0.1, 4.0])  # a tie at 4.0 too


def approx(x):
    return pytest.approx(x, rel=1e-12, abs=1e-12)


def test_accuracy_and_f1():
    assert accuracy(PREDS, LABELS) == approx(skm.accuracy_score(LABELS, PREDS))
    assert accuracy(PREDS3, LABELS3) == approx(skm.accuracy_score(LABELS3, PREDS3))
    assert f1(PREDS, LABELS) == approx(skm.f1_score(LABELS, PREDS))
    assert f1(np.zeros(4, int), np.zeros(4, int)) == 0.0  # no positives at all
    assert f1(1 - PREDS, LABELS) == approx(skm.f1_score(LABELS, 1 - PREDS))


def test_matthews_corr():
    assert matthews_corr(PREDS, LABELS) == approx(skm.matthews_corrcoef(LABELS, PREDS))
    assert matthews_corr(PREDS3, LABELS3) == approx(skm.matthews_corrcoef(LABELS3, PREDS3))
    assert matthews_corr(np.ones(5, int), LABELS[:5]) == 0.0  # constant predictions: undefined
    assert matthews_corr(LABELS, LABELS) == approx(1.0)


def test_pearson_and_spearman_with_ties():
    assert pearson(X, Y) == approx(stats.pearsonr(X, Y)[0])
    assert spearman(X, Y) == approx(stats.spearmanr(X, Y)[0])
    assert spearman(X, -X) == approx(-1.0)
    assert spearman(PREDS3, LABELS3) == approx(stats.spearmanr(PREDS3, LABELS3)[0])
    assert math.isnan(pearson(np.ones(4), np.arange(4)))


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError):
        accuracy(PREDS, LABELS[:-1])


@pytest.mark.parametrize("name", ["cola", "sst2", "mrpc", "qqp", "qnli", "rte"])
def test_glue_metrics_binary(name):
    task = get_task(name)
    logits = np.stack([0.3 - PREDS, PREDS * 0.5 - 0.2], axis=1)  # argmax == PREDS
    expected = {"accuracy": skm.accuracy_score(LABELS, PREDS),
                "f1": skm.f1_score(LABELS, PREDS),
                "matthews_corr": skm.matthews_corrcoef(LABELS, PREDS)}
    result = glue_metrics(task, logits, LABELS)
    assert list(result) == list(task.metric_names)
    assert all(type(v) is float for v in result.values())
    assert result == {k: approx(expected[k]) for k in task.metric_names}


def test_glue_metrics_mnli_and_stsb():
    logits = np.eye(3)[PREDS3] * 2.0 - 1.0
    assert glue_metrics(get_task("mnli"), logits, LABELS3) == {
        "accuracy": approx(skm.accuracy_score(LABELS3, PREDS3))}
    stsb = get_task("stsb")
    expected = {"pearson": approx(stats.pearsonr(X, Y)[0]),
                "spearman": approx(stats.spearmanr(X, Y)[0])}
    assert glue_metrics(stsb, X, Y) == expected
    assert glue_metrics(stsb, X[:, None], Y) == expected
    with pytest.raises(ValueError):
        glue_metrics(get_task("rte"), logits, LABELS3)  # 3 logits for a 2-label task
