"""Bad input to compare.py, convert.py and export.py: one ``error: ...`` line, exit code 2, nothing written, no
input lost."""
import json
import os
import shutil

import pytest

from common.compare import run_both
from common.convert import convert_checkpoint
from common.errors import UserError, cli
from common.fsutil import atomic_dir
from conftest import run_script, user_error
from ofa_bert.spec import SPEC
from tiny_checkpoints import save_tiny

LFS_POINTER = "version https://git-lfs.github.com/spec/v1\noid sha256:4d7a2146\nsize 1234567\n"
LFS_ERROR = "cannot be read: it is a git-lfs pointer, not the weights (fetch them with git lfs pull)"


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    """(torch_dir, paddle_dir) of a tiny converted BERT."""
    root = tmp_path_factory.mktemp("bert")
    torch_dir = save_tiny(str(root / "torch"), "bert")
    convert_checkpoint(torch_dir, str(root / "paddle"), SPEC, quiet=True)
    return torch_dir, str(root / "paddle")


def _copy(src, dst, drop=()):
    """A copy of the directory ``src`` at ``dst`` without the files ``drop``."""
    shutil.copytree(src, dst)
    for name in drop:
        os.remove(os.path.join(dst, name))
    return str(dst)


def _compare_error(torch_dir, paddle_dir, model_type="bert"):
    with pytest.raises(UserError) as err:
        run_both(torch_dir, paddle_dir, model_type)
    return str(err.value)


def test_compare_script_refuses_another_model_type(bert):
    """squeezebert/compare.py on two BERTs used to print OK."""
    proc = run_script("squeezebert/compare.py", "--torch_dir", bert[0], "--paddle_dir", bert[1])
    assert user_error(proc) == f"{bert[0]}/config.json: model_type is 'bert', expected 'squeezebert'"


def test_compare_refuses_another_model_type_on_either_side(bert, squeezebert_dirs):
    squeeze_torch, squeeze_paddle = squeezebert_dirs["base"]
    assert _compare_error(squeeze_torch, bert[1]) == (f"{squeeze_torch}/config.json: model_type is 'squeezebert', "
                                                      "expected 'bert'")
    assert _compare_error(bert[0], squeeze_paddle) == (f"{squeeze_paddle}/config.json: model_type is 'squeezebert', "
                                                       "expected 'bert'")
    # Without a model type (the library call), both sides must still agree with the torch one.
    assert _compare_error(bert[0], squeeze_paddle, None).endswith("model_type is 'squeezebert', expected 'bert'")


def test_compare_refuses_missing_vocab_and_swapped_directories(bert, tmp_path):
    paddle = _copy(bert[1], tmp_path / "paddle", drop=["vocab.txt"])
    assert _compare_error(bert[0], paddle) == f"{paddle}/vocab.txt: missing (the tokenizer vocabulary is required)"
    torch = _copy(bert[0], tmp_path / "torch", drop=["vocab.txt"])
    assert _compare_error(torch, bert[1]) == f"{torch}/vocab.txt: missing (the tokenizer vocabulary is required)"
    assert _compare_error(bert[1], bert[1]) == (f"{bert[1]}: no model.safetensors or pytorch_model.bin (it holds "
                                                "model_state.pdparams: a converted paddle checkpoint, not a torch one)")
    assert _compare_error(bert[0], bert[0]) == (f"{bert[0]}: no model_state.pdparams (a torch checkpoint? convert it "
                                                "with convert.py first)")


def test_compare_refuses_different_models(bert, tmp_path):
    wide = save_tiny(str(tmp_path / "wide"), "bert", hidden_size=48)
    assert _compare_error(wide, bert[1]) == (f"{wide} and {bert[1]} are different models (not a checkpoint and its "
                                             "conversion): hidden_size 48 vs 32")
    classifier = save_tiny(str(tmp_path / "classifier"), "bert", head="classification")
    assert _compare_error(classifier, bert[1]) == (f"{classifier} and {bert[1]} are different models (not a "
                                                   "checkpoint and its conversion): BertForSequenceClassification "
                                                   "vs BertModel")


def test_compare_script_refuses_disagreeing_tokenizers(bert, tmp_path):
    """A vocabulary with two words swapped: same shapes, other ids."""
    paddle = _copy(bert[1], tmp_path / "paddle")
    with open(os.path.join(paddle, "vocab.txt"), encoding="utf-8") as f:
        words = f.read().split("\n")
    i, j = words.index("the"), words.index("a")
    words[i], words[j] = words[j], words[i]
    with open(os.path.join(paddle, "vocab.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(words))
    proc = run_script("ofa_bert/compare.py", "--torch_dir", bert[0], "--paddle_dir", paddle)
    assert user_error(proc).startswith(f"{bert[0]} and {paddle}: tokenizers disagree on sample 0 input_ids: torch [")


def _weights(torch_dir, name, content):
    """Replace ``torch_dir``'s weights by a file ``name`` holding ``content``; its path."""
    os.remove(os.path.join(torch_dir, "model.safetensors"))
    path = os.path.join(torch_dir, name)
    with open(path, "wb") as f:
        f.write(content)
    return path


def _saved_as(torch_dir, name, scratch):
    """The bytes of ``torch_dir``'s weights saved as ``name`` (safetensors, or torch's zip pickle at ``scratch``)."""
    import torch
    from safetensors.torch import load_file

    source = os.path.join(torch_dir, "model.safetensors")
    if name == "pytorch_model.bin":
        torch.save(load_file(source), str(scratch))
        source = scratch
    with open(source, "rb") as f:
        return f.read()


@pytest.mark.parametrize("name", ["model.safetensors", "pytorch_model.bin"])
def test_convert_refuses_a_git_lfs_pointer(tmp_path, name):
    torch_dir = save_tiny(str(tmp_path / "torch"), "bert")
    path = _weights(torch_dir, name, LFS_POINTER.encode())
    with pytest.raises(UserError) as err:
        convert_checkpoint(torch_dir, str(tmp_path / "paddle"), SPEC, quiet=True)
    assert str(err.value) == f"{path}: {LFS_ERROR}"
    assert not (tmp_path / "paddle").exists()


@pytest.mark.parametrize("name, reason", [("model.safetensors", "SafetensorError: "), ("pytorch_model.bin", "")])
def test_convert_refuses_a_truncated_weights_file(tmp_path, name, reason):
    torch_dir = save_tiny(str(tmp_path / "torch"), "bert")
    path = _weights(torch_dir, name, _saved_as(torch_dir, name, tmp_path / "full")[:3000])
    with pytest.raises(UserError) as err:
        convert_checkpoint(torch_dir, str(tmp_path / "paddle"), SPEC, quiet=True)
    assert str(err.value).startswith(f"{path}: cannot be read ({reason}")
    assert not (tmp_path / "paddle").exists()


def test_compare_script_refuses_a_git_lfs_pointer(bert, tmp_path):
    torch_dir = _copy(bert[0], tmp_path / "torch")
    path = _weights(torch_dir, "model.safetensors", LFS_POINTER.encode())
    proc = run_script("ofa_bert/compare.py", "--torch_dir", torch_dir, "--paddle_dir", bert[1])
    assert user_error(proc) == f"{path}: {LFS_ERROR}"


def test_export_script_refuses_missing_vocab(bert, tmp_path):
    model_dir = _copy(bert[1], tmp_path / "model", drop=["vocab.txt"])
    proc = run_script("export.py", "--model_dir", model_dir, "--output_dir", str(tmp_path / "out"))
    assert user_error(proc, not_written=tmp_path / "out") == (f"{model_dir}/vocab.txt: missing (the tokenizer "
                                                              "vocabulary is required)")


def _export_error(model_dir, output_dir):
    import export

    with pytest.raises(UserError) as err:
        export.export(model_dir, str(output_dir), 1e-4, 1)
    return str(err.value)


def test_export_refuses_a_torch_checkpoint_and_a_sub_model(bert, tmp_path):
    out = tmp_path / "out"
    assert _export_error(bert[0], out) == (f"{bert[0]}: no model_state.pdparams (a torch checkpoint? convert it with "
                                           "convert.py first)")
    sub = _copy(bert[1], tmp_path / "sub")
    with open(os.path.join(sub, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    with open(os.path.join(sub, "config.json"), "w", encoding="utf-8") as f:
        json.dump({**config, "intermediate_size": 32, "ofa_attention_heads": 2}, f)
    assert _export_error(sub, out) == (f"{sub}: an OFA sub-model (config.json has ofa_attention_heads), which "
                                       "export.py cannot load; ofa_bert/export_model.py exports it (inference.pdmodel "
                                       "in its --output_dir)")
    assert not out.exists()


def test_export_keeps_its_input_and_foreign_directories(bert, tmp_path):
    model_dir = _copy(bert[1], tmp_path / "model")
    before = sorted(os.listdir(model_dir))
    assert _export_error(model_dir, model_dir) == (f"{model_dir}: the output directory is the input {model_dir}; "
                                                   "writing it would delete the input (choose another output "
                                                   "directory)")
    assert _export_error(model_dir, tmp_path) == (f"{tmp_path}: the output directory holds the input {model_dir}; "
                                                  "writing it would delete the input (choose another output "
                                                  "directory)")
    assert sorted(os.listdir(model_dir)) == before
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    assert _export_error(model_dir, tmp_path / "mine") == (f"{tmp_path / 'mine'}: not empty and not an earlier "
                                                           "output (no export.json, inference.pdmodel): choose "
                                                           "another directory or empty it")
    assert os.listdir(tmp_path / "mine") == ["notes.txt"]


def _convert_error(capsys, torch_dir, paddle_dir):
    from common.convert import convert_main

    with pytest.raises(SystemExit) as exc:
        cli(convert_main)(SPEC, ("bert-base-uncased",), "/nonexistent-weights",
                          ["--torch_dir", str(torch_dir), "--paddle_dir", str(paddle_dir), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and len(err.splitlines()) == 1 and err.startswith("error: "), err
    return err[len("error: "):]


def test_convert_keeps_its_input_and_foreign_directories(tmp_path, capsys):
    torch_dir = save_tiny(str(tmp_path / "in" / "torch"), "bert")
    before = sorted(os.listdir(torch_dir))
    assert _convert_error(capsys, torch_dir, torch_dir) == (f"{torch_dir}: the output directory is the input "
                                                            f"{torch_dir}; writing it would delete the input (choose "
                                                            "another output directory)")
    parent = tmp_path / "in"
    assert _convert_error(capsys, torch_dir, parent) == (f"{parent}: the output directory holds the input {torch_dir}; "
                                                         "writing it would delete the input (choose another output "
                                                         "directory)")
    assert sorted(os.listdir(torch_dir)) == before and os.listdir(parent) == ["torch"]
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    assert _convert_error(capsys, torch_dir, mine) == (f"{mine}: not empty and not an earlier output (no config.json, "
                                                       "model_state.pdparams): choose another directory or empty it")
    (tmp_path / "file").write_text("keep")
    assert _convert_error(capsys, torch_dir, tmp_path / "file") == f"{tmp_path / 'file'}: exists and is not a directory"
    assert os.listdir(mine) == ["notes.txt"] and (tmp_path / "file").read_text() == "keep"
    assert sorted(os.listdir(tmp_path)) == ["file", "in", "mine"]


def test_convert_script_refuses_its_input_as_output(bert, tmp_path):
    torch_dir = _copy(bert[0], tmp_path / "torch")
    proc = run_script("ofa_bert/convert.py", "--torch_dir", torch_dir, "--paddle_dir", torch_dir)
    assert user_error(proc).startswith(f"{torch_dir}: the output directory is the input")
    assert os.path.isfile(os.path.join(torch_dir, "model.safetensors"))


def _write(tmp, names):
    for name in names:
        with open(os.path.join(tmp, name), "w") as f:
            f.write("new")


def test_atomic_dir_replaces_only_an_earlier_output(tmp_path):
    out = tmp_path / "out"
    with atomic_dir(str(out)) as tmp:
        _write(tmp, ["a", "b"])
    with atomic_dir(str(out), owned=("c",)) as tmp:  # an earlier output, c written only sometimes
        _write(tmp, ["a", "b", "c"])
    with atomic_dir(str(out), owned=("c",)) as tmp:
        _write(tmp, ["a", "b"])
    assert sorted(os.listdir(out)) == ["a", "b"]
    (out / "notes.txt").write_text("keep")
    with pytest.raises(UserError) as err:
        with atomic_dir(str(out)) as tmp:
            _write(tmp, ["a", "b"])
    assert str(err.value) == (f"{out}: not replaced: it holds notes.txt, which this output does not have (not an "
                              "earlier output of this tool? choose another directory or empty it)")
    assert sorted(os.listdir(out)) == ["a", "b", "notes.txt"] and sorted(os.listdir(tmp_path)) == ["out"]
