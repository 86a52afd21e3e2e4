"""SQuAD: reading and windowing, exact offsets, post-processing, the official metric, run_squad."""
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from common.errors import UserError
from common.squad_data import Answer, SquadExample, make_features, read_squad, windows
from common.squad_metric import compute_f1, squad_v1_metrics, squad_v2_metrics
from common.squad_postprocess import postprocess
from common.tokenization import tokenize
from conftest import REPO, run_script, user_error
from tiny_checkpoints import save_tiny, write_vocab

SLICE = os.path.join(REPO, "..", "shared", "data", "squad", "dev-v2.0-sample.json")


def real_slice() -> str:
    if not os.path.isfile(SLICE):
        pytest.skip("../shared/data/squad/dev-v2.0-sample.json is absent")
    return SLICE


@pytest.fixture(scope="module")
def vocab_file(tmp_path_factory):
    return write_vocab(str(tmp_path_factory.mktemp("vocab")))


@pytest.fixture(scope="module")
def tokenizer(vocab_file):
    import paddlenlp.transformers as ppt

    return ppt.BertTokenizer(vocab_file)


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    """A tiny random BERT converted to PaddleNLP (64 positions)."""
    from common.convert import convert_checkpoint
    from ofa_bert.spec import SPEC

    root = tmp_path_factory.mktemp("bert")
    paddle_dir = str(root / "paddle")
    convert_checkpoint(save_tiny(str(root / "torch"), "bert"), paddle_dir, SPEC, quiet=True)
    return paddle_dir


def squad_file(path, qas, context):
    data = {"version": "v2.0", "data": [{"title": "t", "paragraphs": [{"context": context, "qas": qas}]}]}
    path.write_text(json.dumps(data))
    return str(path)


def example(qid, context, *answers):
    return SquadExample(qid, "what is it ?", context, tuple(Answer(a, context.index(a)) for a in answers))


# ---- the official metric ----

GOLD = {"q1": ["Paris", "the city of Paris"], "q2": ["10th and 11th centuries"], "q3": [], "q4": []}


def test_metric_all_correct():
    preds = {"q1": "paris", "q2": "the 10th and 11th centuries.", "q3": "", "q4": ""}
    m = squad_v2_metrics(GOLD, preds)
    assert (m["exact"], m["f1"], m["HasAns_exact"], m["NoAns_f1"], m["total"]) == (100.0, 100.0, 100.0, 100.0, 4)
    assert "best_f1" not in m  # only with null odds, as the official script
    v1 = {q: a for q, a in GOLD.items() if a}
    assert squad_v1_metrics(v1, preds) == {"exact_match": 100.0, "f1": 100.0}


def test_metric_all_empty():
    m = squad_v2_metrics(GOLD, dict.fromkeys(GOLD, ""))
    assert (m["NoAns_exact"], m["NoAns_f1"], m["HasAns_exact"], m["HasAns_f1"]) == (100.0, 100.0, 0.0, 0.0)
    assert m["exact"] == 50.0 and (m["HasAns_total"], m["NoAns_total"]) == (2, 2)


def test_metric_partial_overlap():
    # gold "the quick brown fox" -> [quick, brown, fox]; pred -> [brown, fox, jumps]: P = R = 2/3.
    assert compute_f1("the quick brown fox", "Brown fox, jumps!") == pytest.approx(2 / 3)
    gold = {"q": ["the quick brown fox", "fox"]}  # max over gold answers: 2/3 beats 2 * (1/3 * 1) / (4/3) = 1/2
    m = squad_v2_metrics(gold, {"q": "brown fox jumps"})
    assert m["exact"] == 0.0 and m["f1"] == pytest.approx(200 / 3)
    assert squad_v1_metrics(gold, {"q": "brown fox jumps"})["f1"] == pytest.approx(200 / 3)
    assert squad_v1_metrics(gold, {})["f1"] == 0.0  # v1.1: a missing prediction scores 0


def test_best_threshold():
    """find_best_thresh by hand: sorted by odds, q1 (+1) lifts 2 -> 3 at -2.0; nothing beats it."""
    gold = {"q1": ["a fox"], "q2": [], "q3": ["the dog"], "q4": []}
    preds = {"q1": "fox", "q2": "cat", "q3": "cat", "q4": ""}
    odds = {"q1": -2.0, "q2": 3.0, "q3": 1.0, "q4": 5.0}
    m = squad_v2_metrics(gold, preds, odds, na_prob_thresh=10.0)
    assert m["exact"] == 50.0  # q1, q4
    assert (m["best_exact"], m["best_exact_thresh"], m["best_f1"], m["best_f1_thresh"]) == (75.0, -2.0, 75.0, -2.0)
    # The null threshold applied first: q2 (odds 3 > 2) now counts as "no answer", which is right.
    assert squad_v2_metrics(gold, preds, odds, na_prob_thresh=2.0)["exact"] == 75.0
    with pytest.raises(ValueError, match="no prediction for 3 of 4 questions"):
        squad_v2_metrics(gold, {"q1": ""})


def test_metric_matches_transformers_copy_of_the_official_script():
    from transformers.data.metrics import squad_metrics as hf

    examples = read_squad(real_slice(), version_2=True)
    rng = np.random.default_rng(0)
    preds, odds = {}, {}
    for ex in examples:
        words = ex.context.split()
        i = int(rng.integers(len(words)))
        choices = ["", " ".join(words[i : i + int(rng.integers(1, 5))])] + [a.text for a in ex.answers]
        preds[ex.qid] = choices[int(rng.integers(len(choices)))]
        odds[ex.qid] = float(rng.uniform(-5, 5))
    gold = {ex.qid: [a.text for a in ex.answers] for ex in examples}
    hf_examples = [SimpleNamespace(qas_id=ex.qid, answers=[{"text": a.text} for a in ex.answers]) for ex in examples]
    for thresh in (1.0, -1.5):
        assert squad_v2_metrics(gold, preds, odds, thresh) == dict(hf.squad_evaluate(hf_examples, preds, odds, thresh))


# ---- reading ----


def test_bad_answers_and_files_name_the_file_and_question(tmp_path):
    context = "the quick brown fox"
    path = squad_file(tmp_path / "bad.json", [{"id": "q7", "question": "who ?", "answers": [
        {"text": "brown", "answer_start": 4}]}], context)
    with pytest.raises(UserError, match=f"^{path}: question q7: answer 'brown' is not in the context at "
                       "answer_start 4 \\(found 'quick'\\)$"):
        read_squad(path, version_2=False)
    with pytest.raises(UserError, match="missing.json: file not found"):
        read_squad(str(tmp_path / "missing.json"), version_2=False)
    (tmp_path / "broken.json").write_text("{\"data\": [")
    with pytest.raises(UserError, match="broken.json: not valid JSON"):
        read_squad(str(tmp_path / "broken.json"), version_2=False)
    with pytest.raises(UserError, match="question 5ad39d53604f3c001a3fe8d1: unanswerable .* pass --version_2_with_negative"):
        read_squad(real_slice(), version_2=False)


def test_real_slice_reads():
    examples = read_squad(real_slice(), version_2=True)
    assert len(examples) == 1407 and sum(ex.is_impossible for ex in examples) == 702


# ---- windows and offsets ----


def test_windows_follow_the_original_doc_stride():
    assert windows(30, 12, 8) == [(0, 12), (8, 12), (16, 12), (24, 6)]
    assert windows(10, 12, 8) == [(0, 10)]
    assert windows(0, 12, 8) == [(0, 0)]


def test_long_context_windows_map_back_to_the_answer(tokenizer):
    filler = "the movie was very good and the plot was fun . " * 6
    context = filler + "where the quick brown fox jumps over the lazy dog . " + filler
    ex = example("q", context, "quick brown fox jumps")
    args = (tokenizer, 32, 8, 8)  # 32 tokens per window, at most 8 question tokens, stride 8
    train, pred = make_features([ex], *args, training=True), make_features([ex], *args, training=False)
    assert len(train) == len(pred) > 5
    starts = []
    for t, p in zip(train, pred):
        assert list(t.input_ids) == list(p.input_ids) and len(t.input_ids) <= 32
        starts.append(p.spans[0][0])
        if t.start_position:
            a, b = p.spans[t.start_position - p.context_start][0], p.spans[t.end_position - p.context_start][1]
            assert context[a:b] == "quick brown fox jumps"
    assert sum(t.start_position > 0 for t in train) >= 2  # several windows hold the answer
    assert starts == sorted(starts) and pred[-1].spans[-1][1] == len(context.rstrip())
    # Each context token is the "max context" token of exactly one window.
    owners = {}
    for p in pred:
        for span, is_max in zip(p.spans, p.max_context):
            owners[span] = owners.get(span, 0) + is_max
    assert set(owners.values()) == {1}


ACCENTED = "Le café «Paris», c'est très-bien! Rho\u0301ne ★ the fox—jumps… over 10°C İstanbul."


def test_offsets_of_accents_punctuation_and_unknown_words(tokenizer, vocab_file):
    """Almost every word is [UNK] in the tiny vocab: the spans still cover exact original characters,
    and tokens and spans are those of Hugging Face's fast tokenizer."""
    import transformers

    ids, spans = tokenize(tokenizer, ACCENTED)
    hf = transformers.BertTokenizerFast(vocab_file)(ACCENTED, add_special_tokens=False, return_offsets_mapping=True)
    assert ids == hf["input_ids"] and spans == [tuple(o) for o in hf["offset_mapping"]]
    assert [ACCENTED[a:b] for a, b in spans][:8] == ["Le", "café", "«", "Paris", "»", ",", "c", "'"]
    assert "Rho\u0301ne" in [ACCENTED[a:b] for a, b in spans]  # a combining accent inside a word
    answers = ("café «Paris»", "très-bien!", "Rho\u0301ne", "fox—jumps…", "10°C İstanbul.")
    examples = [example(f"q{i}", ACCENTED, a) for i, a in enumerate(answers)]
    train = make_features(examples, tokenizer, 64, 16, 16, training=True)
    pred = make_features(examples, tokenizer, 64, 16, 16, training=False)
    for t, p, answer in zip(train, pred, answers):
        a, b = p.spans[t.start_position - p.context_start][0], p.spans[t.end_position - p.context_start][1]
        assert ACCENTED[a:b] == answer
    # Logits pointing at those tokens give back the original text, accents and punctuation intact.
    starts = [np.eye(len(t.input_ids))[t.start_position] * 10 for t in train]
    ends = [np.eye(len(t.input_ids))[t.end_position] * 10 for t in train]
    result = postprocess(examples, pred, starts, ends, n_best_size=5, max_answer_length=10)
    assert [result.predictions[ex.qid] for ex in examples] == list(answers)


# ---- post-processing ----


def test_v2_null_answer_and_threshold(tokenizer):
    context = "the quick brown fox jumps over the lazy dog"
    ex = example("q", context, "brown fox")
    (f,) = make_features([ex], tokenizer, 64, 16, 16, training=False)
    start, end = -np.ones(len(f.input_ids)), -np.ones(len(f.input_ids))
    c = f.context_start
    start[0], end[0] = 2.0, 2.0  # null score 4
    start[c + 2], end[c + 3] = 1.0, 1.5  # "brown fox": 2.5
    start[c + 4], end[c + 8] = 3.0, 3.0  # "jumps over the lazy dog": 6, but longer than max_answer_length
    result = postprocess([ex], [f], [start], [end], n_best_size=3, max_answer_length=4, version_2=True)
    assert result.null_odds == {"q": 1.5} and result.predictions == {"q": ""}
    nbest = result.nbest["q"]
    assert [e["text"] for e in nbest][:2] == ["", "brown fox"]
    assert set(nbest[0]) == {"text", "probability", "start_logit", "end_logit"}
    assert sum(e["probability"] for e in nbest) == pytest.approx(1.0)
    result = postprocess([ex], [f], [start], [end], 3, 4, version_2=True, null_score_diff_threshold=2.0)
    assert result.predictions == {"q": "brown fox"}
    assert postprocess([ex], [f], [start], [end], 3, 4).predictions == {"q": "brown fox"}  # v1.1: no null


# ---- run_squad ----


def test_evaluation_only_on_the_real_slice(tmp_path):
    from common.train_squad import squad_main

    qids = [ex.qid for ex in read_squad(real_slice(), version_2=True)]
    (tmp_path / "predictions.json").write_text(json.dumps(dict.fromkeys(qids, "")))
    (tmp_path / "null_odds.json").write_text(json.dumps(dict.fromkeys(qids, 1.0)))
    argv = ["--predict_file", SLICE, "--version_2_with_negative", "--predictions", str(tmp_path / "predictions.json"),
            "--output_dir", str(tmp_path / "eval"), "--report_to", "none"]
    m = squad_main("bert", "BertForQuestionAnswering", argv)["predict"]
    assert (m["NoAns_exact"], m["HasAns_exact"], m["total"]) == (100.0, 0.0, 1407)
    assert m["exact"] == 702 / 1407 * 100 and m["f1"] == m["exact"]
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["predict"] == m
    m = squad_main("bert", "BertForQuestionAnswering", argv + ["--null_odds", str(tmp_path / "null_odds.json")])
    assert m["predict"]["best_exact"] == m["predict"]["exact"] and m["predict"]["best_exact_thresh"] == 0.0


def test_evaluation_only_errors_exit_2(tmp_path):
    (tmp_path / "predictions.json").write_text(json.dumps({"56ddde6b9a695914005b9628": "France"}))
    proc = run_script("mobilebert/run_squad.py", "--predict_file", real_slice(), "--version_2_with_negative",
                      "--predictions", "predictions.json", "--output_dir", "eval", cwd=tmp_path)
    assert user_error(proc, not_written=tmp_path / "eval") == ("predictions.json: no prediction for 1406 of 1407 "
                                                               "questions (e.g. 56ddde6b9a695914005b9629)")


def test_tiny_bert_trains_predicts_and_resumes(tiny_bert, tmp_path):
    from common.train_squad import squad_main

    out = tmp_path / "run"
    argv = ["--model_name_or_path", tiny_bert, "--train_file", real_slice(), "--predict_file", SLICE,
            "--version_2_with_negative", "--max_train_samples", "20", "--max_predict_samples", "20",
            "--max_seq_length", "64", "--doc_stride", "32", "--max_query_length", "16", "--output_dir", str(out),
            "--do_train", "--save_steps", "3", "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "32",
            "--seed", "3", "--report_to", "none", "--disable_tqdm", "true", "--logging_steps", "2"]
    metrics = squad_main("bert", "BertForQuestionAnswering", argv + ["--max_steps", "3"])
    assert metrics["train"]["train_samples"] == 20 and metrics["predict"]["samples"] == 20
    assert {"exact", "f1", "HasAns_f1", "NoAns_f1", "best_f1", "best_f1_thresh"} <= set(metrics["predict"])
    assert json.loads((out / "metrics.json").read_text()) == json.loads(json.dumps(metrics))
    args = json.loads((out / "args.json").read_text())
    assert args["data"]["doc_stride"] == 32 and args["training"]["seed"] == 3

    examples = {ex.qid: ex for ex in read_squad(SLICE, version_2=True)[:20]}
    predictions = json.loads((out / "predictions.json").read_text())
    nbest = json.loads((out / "nbest_predictions.json").read_text())
    null_odds = json.loads((out / "null_odds.json").read_text())
    assert set(predictions) == set(nbest) == set(null_odds) == set(examples)
    for qid, text in predictions.items():
        assert text in examples[qid].context and (text == "") == (null_odds[qid] > 0.0)
        assert all(set(e) == {"text", "probability", "start_logit", "end_logit"} for e in nbest[qid])

    # Same output directory, more steps: continues from checkpoint-3.
    squad_main("bert", "BertForQuestionAnswering", argv + ["--max_steps", "6"])
    state = json.loads((out / "checkpoint-6" / "trainer_state.json").read_text())
    assert state["global_step"] == 6 and [h["step"] for h in state["log_history"] if "loss" in h] == [2, 4, 6]


def test_mobilebert_run_squad_script_end_to_end(tmp_path):
    """mobilebert/run_squad.py as a user runs it: a tiny converted MobileBERT, v2 recipe flags."""
    from common.convert import convert_checkpoint
    from mobilebert.spec import SPEC

    torch_dir = save_tiny(str(tmp_path / "torch"), "mobilebert", hidden_size=32, embedding_size=16,
                          intra_bottleneck_size=16, intermediate_size=32, num_attention_heads=2,
                          num_feedforward_networks=2, trigram_input=True, normalization_type="no_norm")
    paddle_dir = str(tmp_path / "paddle")
    convert_checkpoint(torch_dir, paddle_dir, SPEC, quiet=True)
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "mobilebert", "run_squad.py"), "--model_name_or_path", paddle_dir,
         "--train_file", real_slice(), "--predict_file", real_slice(), "--version_2_with_negative",
         "--null_score_diff_threshold", "-1.5", "--max_train_samples", "12", "--max_predict_samples", "12",
         "--max_seq_length", "64", "--doc_stride", "32", "--max_query_length", "16", "--output_dir", str(out),
         "--do_train", "--max_steps", "2",
         "--per_device_train_batch_size", "8", "--learning_rate", "8e-5", "--lr_scheduler_type", "cosine",
         "--warmup_ratio", "0.1", "--weight_decay", "0.1", "--adam_epsilon", "1e-6", "--adam_beta2", "0.98",
         "--report_to", "none"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["predict"]["samples"] == 12 and metrics["predict"]["total"] == 12
    for name in ("predictions.json", "nbest_predictions.json", "null_odds.json", "args.json"):
        assert (out / name).is_file(), name


def test_inputs_longer_than_the_model_are_refused(tiny_bert, tmp_path):
    """A --max_seq_length beyond max_position_embeddings (64 here): refused before anything is written."""
    from common.train_squad import squad_main

    context = " ".join(["the quick brown fox"] * 30)
    predict = squad_file(tmp_path / "dev.json", [{"id": "q1", "question": "what ?",
                                                  "answers": [{"text": "fox", "answer_start": 16}]}], context)
    out = tmp_path / "run"
    with pytest.raises(UserError) as exc:
        squad_main("bert", "BertForQuestionAnswering", ["--model_name_or_path", tiny_bert, "--predict_file", predict,
                                                        "--max_seq_length", "128", "--output_dir", str(out)])
    assert str(exc.value) == (f"--max_seq_length 128: {tiny_bert} takes at most 64 tokens (max_position_embeddings), "
                              "the data has inputs of 125; pass at most 64")
    assert not out.exists()
