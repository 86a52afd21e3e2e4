"""SqueezeBERT conversion: alignment within 1e-5, strictness, and one-line errors on bad input."""
import json
import os

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from common.compare import compare, compare_main
from common.convert import convert_checkpoint, convert_main
from common.errors import UserError, cli
from conftest import SQUEEZE, run_script, user_error
from squeezebert.spec import SPEC
from tiny_checkpoints import save_tiny


@pytest.mark.parametrize("name", ["base", "classification"])
def test_converted_model_matches_torch(squeezebert_dirs, name):
    torch_dir, paddle_dir = squeezebert_dirs[name]
    diffs = {d.name: d for d in compare(torch_dir, paddle_dir)}
    expected = {"sequence_output", "pooled_output"} | ({"logits"} if name == "classification" else set())
    assert set(diffs) == expected
    for d in diffs.values():
        assert d.max_abs <= 1e-5, f"{d.name}: {d.max_abs:.3e}"
        assert d.mean_abs <= d.max_abs
    with open(os.path.join(paddle_dir, "config.json")) as f:
        config = json.load(f)
    assert config["model_type"] == "squeezebert"
    assert config["q_groups"] == SQUEEZE["q_groups"]
    if name == "classification":
        assert config["architectures"] == ["SqueezeBertForSequenceClassification"]
        assert len(config["id2label"]) == 3


def test_compare_cli_prints_summary_and_exit_code(squeezebert_dirs, capsys):
    torch_dir, paddle_dir = squeezebert_dirs["classification"]
    assert compare_main("x", ["--torch_dir", torch_dir, "--paddle_dir", paddle_dir]) == 0
    out = capsys.readouterr().out
    last = [line for line in out.splitlines() if line.startswith("max_abs_diff=")]
    assert len(last) == 1 and "mean_abs_diff=" in last[0]
    assert "logits" in out
    # An impossible tolerance must fail with exit code 1.
    assert compare_main("x", ["--torch_dir", torch_dir, "--paddle_dir", paddle_dir, "--atol", "0"]) == 1


def test_mismatched_weights_are_detected(squeezebert_dirs, tmp_path):
    """compare must see a wrong weight: perturb one converted tensor."""
    import paddle

    torch_dir, paddle_dir = squeezebert_dirs["base"]
    bad = tmp_path / "bad"
    os.makedirs(bad)
    for f in os.listdir(paddle_dir):
        os.link(os.path.join(paddle_dir, f), bad / f) if f != "model_state.pdparams" else None
    state = paddle.load(os.path.join(paddle_dir, "model_state.pdparams"))
    state["encoder.layers.1.intermediate.conv1d.bias"] += 0.01
    paddle.save(state, str(bad / "model_state.pdparams"))
    worst = max(d.max_abs for d in compare(torch_dir, str(bad)))
    assert worst > 1e-4


def _tampered(tmp_path, edit):
    torch_dir = save_tiny(str(tmp_path / "torch"), "squeezebert", **SQUEEZE)
    path = os.path.join(torch_dir, "model.safetensors")
    tensors = load_file(path)
    edit(tensors)
    save_file(tensors, path, metadata={"format": "pt"})
    return torch_dir


def _drop(t):
    del t["encoder.layers.0.attention.key.bias"]


def _extra(t):
    t["encoder.layers.0.attention.surprise"] = np.zeros(3, np.float32)


def _reshape(t):
    t["pooler.dense.bias"] = np.zeros(7, np.float32)


@pytest.mark.parametrize(
    "edit, message",
    [
        (_drop, "target parameters not filled: encoder.layers.0.attention.key.bias"),
        (_extra, "unexpected source tensors (neither mapped nor skipped): encoder.layers.0.attention.surprise"),
        (_reshape, "shape mismatches: pooler.dense.bias (7,) -> pooler.dense.bias (32,)"),
    ],
)
def test_strict_conversion_errors_and_writes_nothing(tmp_path, edit, message):
    torch_dir = _tampered(tmp_path, edit)
    out = tmp_path / "out" / "paddle"
    with pytest.raises(UserError) as err:
        convert_checkpoint(torch_dir, str(out), SPEC, quiet=True)
    assert message in str(err.value)
    assert str(err.value).startswith(f"{torch_dir}: conversion failed")
    assert not out.exists()
    assert not (tmp_path / "out").exists() or os.listdir(tmp_path / "out") == []


def test_offenders_are_all_listed(tmp_path):
    def edit(t):
        _drop(t)
        _extra(t)
        _reshape(t)

    with pytest.raises(UserError) as err:
        convert_checkpoint(_tampered(tmp_path, edit), str(tmp_path / "p"), SPEC, quiet=True)
    text = str(err.value)
    assert "not filled" in text and "unexpected" in text and "shape mismatches" in text


def test_pretraining_heads_are_skipped_explicitly(tmp_path, capsys):
    torch_dir = _tampered(tmp_path, lambda t: t.update({"cls.predictions.bias": np.zeros(62, np.float32)}))
    report = convert_checkpoint(torch_dir, str(tmp_path / "p"), SPEC)
    assert report.skipped == ["cls.predictions.bias"]
    assert report.computed == ["embeddings.position_ids"]
    out = capsys.readouterr().out
    assert "  cls.predictions.bias skipped" in out
    assert "  pooler.dense.weight -> pooler.dense.weight [32, 32] transposed" in out


def test_reconversion_replaces_output_atomically(squeezebert_dirs, tmp_path):
    """An earlier conversion is replaced; one holding something more (a user's note) is kept and refused."""
    torch_dir, _ = squeezebert_dirs["base"]
    out = tmp_path / "p"
    convert_checkpoint(torch_dir, str(out), SPEC, quiet=True)
    first = os.stat(out / "model_state.pdparams").st_ino
    convert_checkpoint(torch_dir, str(out), SPEC, quiet=True)
    written = ["config.json", "model_state.pdparams", "special_tokens_map.json", "tokenizer_config.json", "vocab.txt"]
    assert sorted(os.listdir(out)) == written and os.stat(out / "model_state.pdparams").st_ino != first
    (out / "notes.txt").write_text("mine")
    with pytest.raises(UserError) as err:
        convert_checkpoint(torch_dir, str(out), SPEC, quiet=True)
    assert str(err.value) == (f"{out}: not replaced: it holds notes.txt, which this output does not have (not an "
                              "earlier output of this tool? choose another directory or empty it)")
    assert sorted(os.listdir(out)) == sorted(written + ["notes.txt"]) and (out / "notes.txt").read_text() == "mine"
    assert sorted(os.listdir(tmp_path)) == ["p"]


def _cli_error(capsys, argv):
    with pytest.raises(SystemExit) as exc:
        cli(convert_main)(SPEC, ("squeezebert-uncased",), "/nonexistent-weights", argv)
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    return err


def test_bad_input_one_line_errors(tmp_path, capsys):
    assert "does not exist" in _cli_error(capsys, ["--torch_dir", str(tmp_path / "nope"), "--paddle_dir", "x"])
    hub = _cli_error(capsys, ["--torch_dir", "squeezebert/squeezebert-uncased", "--paddle_dir", "x"])
    assert "hub names cannot be downloaded" in hub

    bert = save_tiny(str(tmp_path / "bert"), "bert")
    err = _cli_error(capsys, ["--torch_dir", bert, "--paddle_dir", str(tmp_path / "o")])
    assert err == f"error: {bert}/config.json: model_type is 'bert', expected 'squeezebert'"

    novocab = save_tiny(str(tmp_path / "novocab"), "squeezebert", **SQUEEZE)
    os.remove(os.path.join(novocab, "vocab.txt"))
    err = _cli_error(capsys, ["--torch_dir", novocab, "--paddle_dir", str(tmp_path / "o")])
    assert err == f"error: {novocab}/vocab.txt: missing (the tokenizer vocabulary is required)"
    assert "none of squeezebert-uncased found" in _cli_error(capsys, [])
    assert not (tmp_path / "o").exists()


def test_convert_script_exit_code(tmp_path):
    proc = run_script("squeezebert/convert.py", "--torch_dir", str(tmp_path / "missing"), "--paddle_dir",
                      str(tmp_path / "out"))
    assert user_error(proc, not_written=tmp_path / "out") == (f"--torch_dir '{tmp_path / 'missing'}' does not exist "
                                                              "or is not a directory")


def test_unsupported_layer_norm_eps_is_refused(tmp_path):
    """PaddleNLP's SqueezeBERT forces epsilon 1e-12; another value would convert inexactly."""
    torch_dir = save_tiny(str(tmp_path / "torch"), "squeezebert", layer_norm_eps=1e-3, **SQUEEZE)
    with pytest.raises(UserError, match=r"config.json: layer_norm_eps=0.001 is not supported"):
        convert_checkpoint(torch_dir, str(tmp_path / "p"), SPEC, quiet=True)
    assert not (tmp_path / "p").exists()
