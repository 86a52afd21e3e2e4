"""GLUE TSV reading on self-made files with the official column layouts."""
from __future__ import annotations

import logging

import pytest

from common.errors import UserError
from common.glue import Example, get_task, label_order, read_split

MNLI_TRAIN_HEADER = ("index promptID pairID genre sentence1_binary_parse sentence2_binary_parse "
                     "sentence1_parse sentence2_parse sentence1 sentence2 label1 gold_label")
MNLI_DEV_HEADER = ("index promptID pairID genre sentence1_binary_parse sentence2_binary_parse "
                   "sentence1_parse sentence2_parse sentence1 sentence2 "
                   "label1 label2 label3 label4 label5 gold_label")


def write_tsv(directory, name, header, rows):
    """Write ``rows`` under ``header`` (None, a list of names, or names separated by spaces)."""
    directory.mkdir(parents=True, exist_ok=True)
    if isinstance(header, str):
        header = header.split(" ")
    lines = ([] if header is None else ["\t".join(header)]) + ["\t".join(r) for r in rows]
    path = directory / name
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_cola_headerless_by_position(tmp_path):
    write_tsv(tmp_path, "train.tsv", None, [
        ["gj04", "1", "", 'He said "hi.'],
        ["gj04", "0", "*", "Him went."],
    ])
    examples, skipped = read_split(str(tmp_path), "CoLA", "train")
    assert skipped == 0
    assert examples == [Example('He said "hi.', None, "1"), Example("Him went.", None, "0")]


def test_sst2(tmp_path):
    write_tsv(tmp_path, "dev.tsv", "sentence label", [['a "quoted film ', "1"], ["dull", "0"]])
    assert read_split(str(tmp_path), "SST-2", "dev") == (
        [Example('a "quoted film ', None, "1"), Example("dull", None, "0")], 0)


def test_mrpc(tmp_path):
    write_tsv(tmp_path, "train.tsv", ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"], [
        ["1", "702876", "702977", 'He "said', "He said"],
        ["0", "2108705", "2108831", "Yucaipa owned", "Yucaipa bought"],
    ])
    examples, _ = read_split(str(tmp_path), "mrpc", "train")
    assert examples == [Example('He "said', "He said", "1"),
                        Example("Yucaipa owned", "Yucaipa bought", "0")]


def test_stsb_float_scores(tmp_path):
    header = "index genre filename year old_index source1 source2 sentence1 sentence2 score"
    write_tsv(tmp_path, "dev.tsv", header, [
        ["0", "main-captions", "MSRvid", "2012test", "0000", "none", "none",
         "A man plays.", 'A "man" plays.', "5.000"],
        ["1", "main-news", "headlines", "2013", "0001", "none", "none", "x", "y", "0.4"],
    ])
    examples, _ = read_split(str(tmp_path), "sts-b", "dev")
    assert examples == [Example("A man plays.", 'A "man" plays.', 5.0), Example("x", "y", 0.4)]
    assert all(type(e.label) is float for e in examples)


def test_qqp(tmp_path):
    write_tsv(tmp_path, "dev.tsv", "id qid1 qid2 question1 question2 is_duplicate", [
        ["201359", "303345", "303346", 'Why "are', "Why is", "1"],
        ["7", "15", "16", "How?", "", "0"],
    ])
    assert read_split(str(tmp_path), "qqp", "dev") == (
        [Example('Why "are', "Why is", "1"), Example("How?", "", "0")], 0)


def test_mnli_train_and_both_dev_layouts(tmp_path):
    parses = ["(a)", "(b)", "(ROOT a)", "(ROOT b)"]
    write_tsv(tmp_path, "train.tsv", MNLI_TRAIN_HEADER, [
        ["0", "31193", "31193n", "government", *parses, 'Conceptually "cream', "Product", "neutral",
         "neutral"],
    ])
    write_tsv(tmp_path, "dev_matched.tsv", MNLI_DEV_HEADER, [
        ["0", "63735", "63735n", "slate", *parses, "The new rights", "Everyone", "neutral",
         "entailment", "neutral", "neutral", "neutral", "neutral"],
    ])
    write_tsv(tmp_path, "dev_mismatched.tsv", MNLI_DEV_HEADER, [
        ["0", "75", "75c", "letters", *parses, "Your gift", "No gift", "contradiction",
         "contradiction", "contradiction", "contradiction", "contradiction", "contradiction"],
    ])
    task = get_task("MNLI")
    assert task.dev_splits == ("dev_matched", "dev_mismatched")
    assert read_split(str(tmp_path), task, "train")[0] == [
        Example('Conceptually "cream', "Product", "neutral")]
    assert read_split(str(tmp_path), task, "dev_matched")[0] == [
        Example("The new rights", "Everyone", "neutral")]
    assert read_split(str(tmp_path), task, "dev_mismatched")[0] == [
        Example("Your gift", "No gift", "contradiction")]
    with pytest.raises(UserError, match="unknown split 'dev'"):
        read_split(str(tmp_path), task, "dev")


def test_qnli(tmp_path):
    write_tsv(tmp_path, "dev.tsv", "index question sentence label", [
        ["0", 'What "came', "It came.", "entailment"],
        ["1", "Who?", "Nobody.", "not_entailment"],
    ])
    assert read_split(str(tmp_path), "qnli", "dev")[0] == [
        Example('What "came', "It came.", "entailment"),
        Example("Who?", "Nobody.", "not_entailment")]


def test_rte(tmp_path):
    write_tsv(tmp_path, "train.tsv", "index sentence1 sentence2 label", [
        ["0", 'No "Weapons', "Weapons found.", "not_entailment"],
        ["1", "A cat.", "An animal.", "entailment"],
    ])
    assert read_split(str(tmp_path), "rte", "train")[0] == [
        Example('No "Weapons', "Weapons found.", "not_entailment"),
        Example("A cat.", "An animal.", "entailment")]


def test_qqp_malformed_rows_skipped_counted_warned_once(tmp_path, caplog):
    path = write_tsv(tmp_path, "train.tsv", "id qid1 qid2 question1 question2 is_duplicate", [
        ["1", "1", "2", "q1", "q2", "0"],
        ["2", "3", "4", "only one question"],  # line 3: too few fields
        ["3", "5", "6", "q5", "q6", "maybe"],  # line 4: unknown label
        ["4", "7", "8", "q7", "q8", "1"],
    ])
    with caplog.at_level(logging.WARNING, logger="common.glue"):
        examples, skipped = read_split(str(tmp_path), "qqp", "train")
    assert examples == [Example("q1", "q2", "0"), Example("q7", "q8", "1")]
    assert skipped == 2
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert message == (f"QQP {path}: skipped 2 malformed rows "
                       "(first at line 3: expected 6 tab-separated fields, got 4)")


def user_error(fn, *args) -> str:
    """The message of the :class:`UserError` that ``fn(*args)`` raises."""
    with pytest.raises(UserError) as err:
        fn(*args)
    return str(err.value)


@pytest.mark.parametrize("row, problem", [
    (["1", "a", "b"], "expected 4 tab-separated fields, got 3"),
    (["1", "a", "b", "contradiction"],
     "unknown label 'contradiction' (expected one of: entailment, not_entailment)"),
])
def test_malformed_row_is_user_error_with_path_and_line(tmp_path, row, problem):
    path = write_tsv(tmp_path, "dev.tsv", "index sentence1 sentence2 label", [
        ["0", "x", "y", "entailment"], row])
    assert user_error(read_split, str(tmp_path), "rte", "dev") == f"{path}:3: {problem}"


def test_cola_wrong_width_and_stsb_bad_score(tmp_path):
    cola = write_tsv(tmp_path / "CoLA", "train.tsv", None,
                     [["gj04", "1", "", "ok"], ["gj04", "1"]])
    assert (user_error(read_split, str(tmp_path / "CoLA"), "cola", "train")
            == f"{cola}:2: expected 4 tab-separated fields, got 2")
    header = "index genre filename year old_index source1 source2 sentence1 sentence2 score"
    stsb = write_tsv(tmp_path / "STS-B", "dev.tsv", header,
                     [["0", "g", "f", "y", "o", "s", "s", "a", "b", "high"]])
    assert (user_error(read_split, str(tmp_path / "STS-B"), "stsb", "dev")
            == f"{stsb}:2: score 'high' is not a finite number")


def test_header_missing_column(tmp_path):
    path = write_tsv(tmp_path, "train.tsv", "sentence labels", [["x", "1"]])
    assert (user_error(read_split, str(tmp_path), "sst2", "train")
            == f"{path}:1: header lacks column(s) label")


def test_unknown_task():
    assert user_error(get_task, "xyz") == (
        "unknown task 'xyz'; choose one of: cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte")


def test_missing_dir_and_file(tmp_path):
    missing = tmp_path / "nope"
    assert (user_error(read_split, str(missing), "rte", "train")
            == f"GLUE data directory not found: {missing}")
    assert (user_error(read_split, str(tmp_path), "rte", "train")
            == f"rte: data file not found: {tmp_path / 'train.tsv'}")


def test_task_table():
    assert get_task("Sts-B").name == "stsb"
    assert get_task("sst-2") == get_task("SST2")
    stsb = get_task("stsb")
    assert stsb.is_regression and stsb.num_labels == 1 and stsb.labels is None
    mnli = get_task("mnli")
    assert mnli.labels == ["contradiction", "entailment", "neutral"] and mnli.num_labels == 3
    assert {n: get_task(n).metric_names for n in
            ["cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte"]} == {
        "cola": ("matthews_corr", "accuracy"), "sst2": ("accuracy",),
        "mrpc": ("accuracy", "f1"), "stsb": ("pearson", "spearman"),
        "qqp": ("accuracy", "f1"), "mnli": ("accuracy",), "qnli": ("accuracy",),
        "rte": ("accuracy",)}
    get_task("rte").labels.append("x")  # a caller's copy, not the table's
    assert get_task("rte").labels == ["entailment", "not_entailment"]


def test_label_order():
    mnli, rte, stsb = get_task("mnli"), get_task("rte"), get_task("stsb")
    canonical = ["contradiction", "entailment", "neutral"]
    assert label_order(mnli, None) == canonical
    assert label_order(mnli, {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}) == canonical
    assert label_order(mnli, {0: "ENTAILMENT", 1: "NEUTRAL", 2: "CONTRADICTION"}) == [
        "entailment", "neutral", "contradiction"]
    assert label_order(mnli, {"2": "neutral", "0": "contradiction", "1": "entailment"}) == canonical
    assert label_order(rte, {0: "not_entailment", 1: "entailment"}) == [
        "not_entailment", "entailment"]
    assert label_order(get_task("sst2"), {0: "0", 1: "1"}) == ["0", "1"]
    assert label_order(stsb, {0: "LABEL_0"}) is None
    for bad in [{0: "entailment", 1: "neutral", 2: "other"},  # names something else
                {0: "entailment", 1: "entailment", 2: "neutral"},  # duplicate
                {0: "LABEL_0", 1: "LABEL_1"},  # wrong size
                {1: "LABEL_1", 2: "LABEL_2", 3: "LABEL_3"}]:  # ids not 0..n-1
        with pytest.raises(UserError, match="does not fit task mnli"):
            label_order(mnli, bad)
