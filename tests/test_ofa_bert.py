"""OFA-BERT: TinyBERT conversion, width sub-models, OFA training and export, no global patches.

The teacher fine-tuning and the OFA run happen in subprocesses (PaddleSlim must not touch this
process); a small wrapper around each records whether paddle.nn's transformer classes changed.
"""
import json
import os
import shutil
import subprocess
import sys

import common  # noqa: F401  (zlib before paddle)
import numpy as np
import pytest
from common.convert import convert_checkpoint
from common.errors import UserError
from conftest import REPO, run_script, user_error
from ofa_bert.spec import SPEC
from test_run_glue import keyword_task
from tiny_checkpoints import save_tiny

# 12 heads as in BERT-base and TinyBERT, so every width of the published list keeps whole heads.
TINY = dict(hidden_size=48, num_attention_heads=12, intermediate_size=64)
WIDTHS = (1.0, 0.8333333333333334, 0.6666666666666666, 0.5)

# Runs a script as __main__ between two snapshots of paddle.nn's transformer classes (taken after
# PaddleNLP's own import-time patches, the baseline every run has); can record the batches the
# importance computation is given. argv: OUT_JSON RECORD(0|1) SCRIPT ARGS...
WRAPPER = r'''
import json, runpy, sys
import common, paddle.nn as nn, paddlenlp.transformers

NAMES = ("MultiHeadAttention", "TransformerEncoderLayer", "TransformerEncoder")

def snapshot():
    classes = {n: getattr(nn, n) for n in NAMES}
    out = {f"paddle.nn.{n}": c for n, c in classes.items()}
    out.update({f"{n}.{k}": v for n, c in classes.items() for k, v in vars(c).items()})
    return out

out_json, record, script, args = sys.argv[1], sys.argv[2] == "1", sys.argv[3], sys.argv[4:]
before = snapshot()
import ofa_bert  # noqa: F401
seen = []
if record:
    from ofa_bert import ofa
    original = ofa.head_neuron_importance
    def recording(model, head_masks, batches, loss_fn):
        def tap():
            for batch in batches:
                seen.append(batch["input_ids"].numpy().tolist())
                yield batch
        return original(model, head_masks, tap(), loss_fn)
    ofa.head_neuron_importance = recording
sys.argv = [script, *args]
code = 0
try:
    runpy.run_path(script, run_name="__main__")
except SystemExit as exc:
    code = exc.code or 0
after = snapshot()
changed = sorted(k for k in before.keys() | after.keys() if before.get(k) is not after.get(k))
with open(out_json, "w") as f:
    modules = {m: m in sys.modules for m in ("ofa_bert.ofa", "paddleslim.nas.ofa.utils.nlp_utils")}
    json.dump({"changed": changed, "modules": modules, "importance": seen}, f)
sys.exit(code)
'''


# distill_step (kernels on or off) against PaddleSlim's own distillation (OFA.forward + calc_distill_loss), and the
# importance with the kernels against paddle's; prints one JSON line. Eval mode: no dropout, so all are deterministic.
DISTILL_CHECK = r"""
import copy, json, sys
import common, numpy as np, paddle
import paddlenlp.transformers as ppt
from common.train_glue import GlueLoss
from common.train_kernels import use_train_kernels
from ofa_bert import ofa
sys.path.insert(0, "tests")
from tiny_checkpoints import padded_batch

paddle.set_device("cpu")
config = ppt.BertConfig(vocab_size=62, hidden_size=48, num_hidden_layers=2, num_attention_heads=12,
                        intermediate_size=64, max_position_embeddings=64, num_labels=3)
paddle.seed(1)
teacher = ppt.BertForSequenceClassification(config)
paddle.seed(2)
plain = ppt.BertForSequenceClassification(config)
teacher.eval()
for p in teacher.parameters():
    p.stop_gradient = True
batch = {k: paddle.to_tensor(v) for k, v in padded_batch(4, 9, seed=3).items()}
batch["labels"] = paddle.to_tensor(np.array([0, 2, 1, 1]))
widths = (1.0, 0.5)

def student(kernels):
    model = copy.deepcopy(plain)
    ofa.bind_attention(model)
    if kernels:
        use_train_kernels(model)
    return model

def grads(model):
    return {n: p.grad.numpy().copy() for n, p in model.named_parameters() if p.grad is not None}

def paddleslim_reference():
    model = student(False)
    ofa_model = ofa.build_paddleslim_ofa(model, teacher, 0.1)
    model.eval()
    losses = ofa.paddleslim_distill_step(ofa_model, batch, [ofa.width_config(ofa_model, w) for w in widths], 2.0)
    return losses, grads(model)

def ours(kernels):
    model = student(kernels)
    ofa_model = ofa.build_ofa(model)
    swapped = use_train_kernels(model) if kernels else 0
    model.eval()
    losses = ofa.distill_step(ofa_model, teacher, batch, [ofa.width_config(ofa_model, w) for w in widths], 0.1, 2.0,
                              False)
    classes = sorted({f"{type(layer).__module__}.{type(layer).__name__}" for layer in model.sublayers()})
    return losses, grads(model), swapped, classes

def importance(kernels):
    model = copy.deepcopy(plain)
    head_masks = ofa.bind_attention(model)
    if kernels:
        use_train_kernels(model)
    heads, neurons = ofa.head_neuron_importance(model, head_masks, [batch], GlueLoss(False))
    return heads, np.stack(neurons)

ref_losses, ref_grads = paddleslim_reference()
out = {"reference": ref_losses}
for kernels in (False, True):
    losses, g, swapped, classes = ours(kernels)
    assert set(g) == set(ref_grads), sorted(set(g) ^ set(ref_grads))
    out[f"kernels={kernels}"] = {
        "losses": losses, "swapped": swapped, "classes": classes,
        # relative to the largest gradient: the key bias's is zero up to rounding (softmax ignores it)
        "grad_rel": max(float(np.abs(g[n] - ref_grads[n]).max()) for n in g) / max(float(np.abs(v).max()) for v in ref_grads.values()),
    }
(h0, n0), (h1, n1) = importance(False), importance(True)
out["importance_rel"] = [float(np.abs(h1 - h0).max() / np.abs(h0).max()), float(np.abs(n1 - n0).max() / np.abs(n0).max())]
print(json.dumps(out))
"""


def test_distillation_matches_paddleslims_with_and_without_kernels():
    """One teacher forward per batch computes PaddleSlim's losses and gradients (which run it per width)."""
    proc = subprocess.run([sys.executable, "-c", DISTILL_CHECK], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    ref = out["reference"]
    assert len(ref) == 2 and min(ref) > 0.1 and abs(ref[0] - ref[1]) > 1e-4  # a different teacher; widths differ
    for kernels in (False, True):
        got = out[f"kernels={kernels}"]
        np.testing.assert_allclose(got["losses"], ref, rtol=1e-5)
        assert got["grad_rel"] <= 1e-4
    kernels = out["kernels=True"]
    assert kernels["swapped"] == 2 * 6  # the super layers: q, k, v, out, linear1, linear2 per layer
    assert {"ofa_bert.ofa.FastSuperLinear", "ofa_bert.ofa.FastWidthAttention", "common.train_kernels.LayerNorm",
            "common.train_kernels.Linear", "common.train_kernels.Dropout"} <= set(kernels["classes"])
    assert not {"paddle.nn.layer.common.Linear", "paddle.nn.layer.norm.LayerNorm"} & set(kernels["classes"])
    assert "ofa_bert.ofa.WidthAttention" in out["kernels=False"]["classes"]
    assert out["importance_rel"][0] <= 1e-4 and out["importance_rel"][1] <= 1e-4


def expected_parameters(cfg: dict, width: float, num_labels: int) -> int:
    """Closed form: a BERT classifier keeping ``width`` of the heads and feed-forward neurons."""
    h, heads = cfg["hidden_size"], cfg["num_attention_heads"]
    a = round(width * heads) * (h // heads)  # attention width kept
    f = round(width * cfg["intermediate_size"])
    embeddings = (cfg["vocab_size"] + cfg["max_position_embeddings"] + cfg["type_vocab_size"]) * h + 2 * h
    layer = 3 * (h * a + a) + (a * h + h) + (h * f + f) + (f * h + h) + 2 * 2 * h
    return embeddings + cfg["num_hidden_layers"] * layer + (h * h + h) + (h * num_labels + num_labels)


def _run(tmp, name, record, script, *args):
    """Run ``script`` under :data:`WRAPPER`; returns (stdout, what the wrapper recorded)."""
    out = os.path.join(tmp, f"{name}.json")
    proc = subprocess.run([sys.executable, "-c", WRAPPER, out, "1" if record else "0", script, *args],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with open(out) as f:
        return proc.stdout, json.load(f)


@pytest.fixture(scope="module")
def ofa_run(tmp_path_factory):
    """A tiny 12-head BERT: converted, fine-tuned (ofa_bert/run_glue.py), OFA-trained at 1.0 and 0.5."""
    root = tmp_path_factory.mktemp("ofa")
    torch_dir = save_tiny(str(root / "torch"), "bert", **TINY)
    paddle_dir = str(root / "paddle")
    convert_checkpoint(torch_dir, paddle_dir, SPEC, quiet=True)
    data = keyword_task(root / "data", n_train=96, n_dev=40)
    # Every dev sentence gets a word no training sentence has: dev and train rows are disjoint.
    dev = os.path.join(data, "dev.tsv")
    with open(dev) as f:
        head, *rows = f.read().splitlines()
    with open(dev, "w") as f:
        f.write("\n".join([head] + [r.replace("\t", " world\t") for r in rows]) + "\n")

    teacher, ofa_dir = str(root / "teacher"), str(root / "ofa")
    _, glue_log = _run(root, "teacher", False, os.path.join(REPO, "ofa_bert", "run_glue.py"), "--model_name_or_path", paddle_dir,
                       "--task_name", "sst2", "--data_dir", data, "--output_dir", teacher, "--do_train",
                       "--max_steps", "36", "--learning_rate", "3e-3", "--warmup_ratio", "0.1",
                       "--per_device_train_batch_size", "16", "--save_steps", "100", "--report_to", "none",
                       "--disable_tqdm", "true")
    # 96 samples in batches of 16: 6 steps an epoch, 8 steps in all; checkpoints at 3, 6 and 8, all kept.
    ofa_args = [os.path.join(REPO, "ofa_bert", "run_glue_ofa.py"), "--model_name_or_path", teacher,
                "--task_name", "sst2", "--data_dir", data, "--width_mult_list", "1.0", "0.5", "--max_steps", "8",
                "--batch_size", "16", "--importance_batches", "3", "--learning_rate", "1e-3", "--logging_steps", "2",
                "--seed", "7", "--save_steps", "3", "--save_total_limit", "0", "--disable_tqdm"]
    stdout, ofa_log = _run(root, "ofa", True, *ofa_args, "--output_dir", ofa_dir)
    with open(os.path.join(torch_dir, "config.json")) as f:
        cfg = json.load(f)
    return dict(root=root, paddle_dir=paddle_dir, data=data, teacher=teacher, ofa_dir=ofa_dir, cfg=cfg,
                stdout=stdout, glue_log=glue_log, ofa_log=ofa_log, ofa_args=ofa_args)


def test_wrapper_sees_paddleslims_patch(tmp_path):
    """Control: importing PaddleSlim's nlp_utils is caught by the snapshot comparison."""
    script = tmp_path / "patch.py"
    script.write_text("import paddleslim.nas.ofa.utils.nlp_utils\n")
    _, log = _run(tmp_path, "patch", False, str(script))
    assert "MultiHeadAttention.forward" in log["changed"] and "TransformerEncoderLayer.forward" in log["changed"]
    assert log["modules"]["paddleslim.nas.ofa.utils.nlp_utils"]


def test_run_glue_does_not_patch_paddle_nn(ofa_run):
    """Importing ofa_bert and fine-tuning with run_glue.py leaves paddle.nn's classes alone."""
    assert ofa_run["glue_log"]["changed"] == []
    assert not any(ofa_run["glue_log"]["modules"].values())


def test_ofa_run_does_not_patch_paddle_nn_either(ofa_run):
    """Our OFA binds its attention per instance and never imports PaddleSlim's nlp_utils."""
    assert ofa_run["ofa_log"]["modules"] == {"ofa_bert.ofa": True, "paddleslim.nas.ofa.utils.nlp_utils": False}
    assert ofa_run["ofa_log"]["changed"] == []


def test_ofa_trains_every_width_and_reports_it(ofa_run):
    out, cfg = ofa_run["ofa_dir"], ofa_run["cfg"]
    with open(os.path.join(out, "metrics.json")) as f:
        metrics = json.load(f)
    assert set(metrics["widths"]) == {"1.0000", "0.5000"}
    for key, width in (("1.0000", 1.0), ("0.5000", 0.5)):
        row = metrics["widths"][key]
        assert row["heads"] == round(12 * width) and row["intermediate_size"] == round(64 * width)
        assert row["parameters"] == expected_parameters(cfg, width, 2)
        assert 0 <= row["dev"]["accuracy"] <= 1
    assert metrics["teacher"]["parameters"] == expected_parameters(cfg, 1.0, 2)
    assert metrics["teacher"]["dev"]["accuracy"] >= 0.9  # a teacher worth distilling
    assert metrics["train"]["steps"] == 8
    assert metrics["importance"] == {"split": "train", "batches": 3, "samples": 48}
    assert "supernet at width 1.0 vs teacher: max |logit diff|" in ofa_run["stdout"]
    assert "0.5000" in ofa_run["stdout"].splitlines()[-1]  # the table per width ends the output
    with open(os.path.join(out, "args.json")) as f:
        args = json.load(f)
    assert args["seed"] == 7 and args["width_mult_list"] == [1.0, 0.5] and args["train_kernels"] is True
    assert os.listdir(os.path.join(out, "runs"))  # VisualDL


def test_ofa_run_resumes_to_the_same_result(ofa_run):
    """A run given the uninterrupted run's mid-epoch checkpoint (step 3) ends with the same model and
    metrics, bit for bit: same batches, dropout draws, optimizer and schedule; no importance again."""
    import paddle

    out = ofa_run["root"] / "ofa-resumed"
    assert sorted(os.listdir(ofa_run["ofa_dir"])) == sorted(
        ["args.json", "checkpoint-3", "checkpoint-6", "checkpoint-8", "config.json", "metrics.json",
         "model_state.pdparams", "runs", "special_tokens_map.json", "tokenizer_config.json", "vocab.txt"])
    shutil.copytree(os.path.join(ofa_run["ofa_dir"], "checkpoint-3"), out / "checkpoint-3")
    stdout, log = _run(ofa_run["root"], "ofa-resumed", True, *ofa_run["ofa_args"], "--output_dir", str(out))
    assert f"resuming from {out / 'checkpoint-3'} (step 3 of 8)" in stdout
    assert log["importance"] == [] and "supernet at width 1.0" not in stdout
    state = paddle.load(str(out / "model_state.pdparams"))
    expected = paddle.load(os.path.join(ofa_run["ofa_dir"], "model_state.pdparams"))
    assert set(state) == set(expected)
    for name, value in expected.items():
        assert np.array_equal(state[name].numpy(), value.numpy()), name
    with open(out / "metrics.json") as f:
        resumed = json.load(f)
    with open(os.path.join(ofa_run["ofa_dir"], "metrics.json")) as f:
        metrics = json.load(f)
    assert resumed["widths"] == metrics["widths"] and resumed["train"]["steps"] == 8
    assert resumed["train"]["resumed_from"] == str(out / "checkpoint-3") and metrics["train"]["resumed_from"] is None
    assert sorted(os.listdir(out)).count("checkpoint-8") == 1 and "checkpoint-3" in os.listdir(out)

    # Run again: the last checkpoint is the end; no training, the same table.
    again, _ = _run(ofa_run["root"], "ofa-again", False, *ofa_run["ofa_args"], "--output_dir", str(out))
    assert f"step 8 of 8, from {out / 'checkpoint-8'}:" in again
    assert again.splitlines()[-1] == stdout.splitlines()[-1]  # the widths' table ends both
    with open(out / "metrics.json") as f:
        assert json.load(f)["widths"] == metrics["widths"]


def _with(args: list[str], **values) -> list[str]:
    """``args`` with the values of some ``--flag value`` pairs replaced."""
    out = list(args)
    for flag, value in values.items():
        out[out.index(f"--{flag}") + 1] = str(value)
    return out


def test_ofa_run_refuses_a_checkpoint_of_other_arguments_unless_overwriting(ofa_run):
    out = ofa_run["root"] / "ofa-other"
    shutil.copytree(os.path.join(ofa_run["ofa_dir"], "checkpoint-6"), out / "checkpoint-6")
    args = [sys.executable, *_with(ofa_run["ofa_args"], batch_size=8, max_steps=4), "--output_dir", str(out)]
    proc = subprocess.run(args, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert user_error(proc) == (
        f"{out / 'checkpoint-6'}: written by a run with other arguments (--batch_size 16 there, 8 here; "
        "--max_steps 8 there, 4 here); use --overwrite_output_dir or another --output_dir to start afresh")
    assert sorted(os.listdir(out)) == ["checkpoint-6"]  # nothing written

    proc = subprocess.run(args + ["--overwrite_output_dir"], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "resuming" not in proc.stdout and "supernet at width 1.0" in proc.stdout
    assert [n for n in sorted(os.listdir(out)) if n.startswith("checkpoint")] == ["checkpoint-3", "checkpoint-4"]


def test_ofa_run_refuses_a_width_that_splits_heads(ofa_run):
    """Refused before PaddleNLP logs anything: the one line on stderr is the error."""
    out = ofa_run["root"] / "ofa-split"
    proc = run_script("ofa_bert/run_glue_ofa.py", "--model_name_or_path", ofa_run["teacher"], "--task_name", "sst2",
                      "--data_dir", ofa_run["data"], "--output_dir", str(out), "--width_mult_list", "1", "0.6")
    assert user_error(proc, not_written=out) == "width 0.6 keeps 7.2 of 12 attention heads; use a multiple of 1/12"


@pytest.mark.parametrize("teacher, task, message", [
    ("paddle_dir", "sst2", "{}: the teacher must be a fine-tuned classifier (run ofa_bert/run_glue.py first)"),
    ("teacher", "mnli", "{}: the checkpoint's head has 2 labels, task mnli needs 3"),
])
def test_ofa_run_refuses_a_teacher_that_is_no_classifier_of_the_task(ofa_run, teacher, task, message):
    """The converted encoder (no head) and the sst2 teacher for mnli are refused before anything is written."""
    from ofa_bert import run_glue_ofa

    out = ofa_run["root"] / f"ofa-teacher-{task}"
    argv = ["--model_name_or_path", ofa_run[teacher], "--task_name", task, "--data_dir", ofa_run["data"],
            "--output_dir", str(out), "--width_mult_list", "1", "0.5"]
    with pytest.raises(UserError) as err:
        run_glue_ofa.main(argv)
    assert str(err.value) == message.format(ofa_run[teacher])
    assert not out.exists()


def test_resuming_and_overwriting_exclude_each_other(capsys):
    from ofa_bert import run_glue_ofa

    with pytest.raises(SystemExit) as exc:
        run_glue_ofa.parse_args(["--model_name_or_path", "m", "--task_name", "sst2", "--data_dir", "d", "--output_dir",
                                 "o", "--resume_from_checkpoint", "o/checkpoint-3", "--overwrite_output_dir"])
    assert exc.value.code == 2
    assert "--resume_from_checkpoint and --overwrite_output_dir exclude each other" in capsys.readouterr().err


def test_importance_is_computed_on_training_batches(ofa_run):
    import paddlenlp.transformers as ppt

    from common.glue import read_split

    tokenizer = ppt.BertTokenizer.from_pretrained(ofa_run["paddle_dir"])
    train = {tuple(tokenizer(ex.text_a)["input_ids"]) for ex in read_split(ofa_run["data"], "sst2", "train")[0]}
    dev = {tuple(tokenizer(ex.text_a)["input_ids"]) for ex in read_split(ofa_run["data"], "sst2", "dev")[0]}
    assert not train & dev
    batches = ofa_run["ofa_log"]["importance"]
    assert len(batches) == 3 and all(len(b) == 16 for b in batches)
    rows = {tuple(t for t in row if t != tokenizer.pad_token_id) for b in batches for row in b}
    assert rows <= train


def test_saved_model_is_plain_and_starts_from_the_teacher(ofa_run):
    import paddle

    ofa_state = paddle.load(os.path.join(ofa_run["ofa_dir"], "model_state.pdparams"))
    teacher_state = paddle.load(os.path.join(ofa_run["teacher"], "model_state.pdparams"))
    assert set(ofa_state) == set(teacher_state)  # no PaddleSlim ".fn." names
    assert all(ofa_state[k].shape == teacher_state[k].shape for k in ofa_state)


def test_export_static_matches_dynamic(ofa_run):
    import paddle
    import paddlenlp.transformers as ppt
    from paddle import inference

    from common.glue import get_task, read_split
    from common.metrics import glue_metrics
    from common.train_glue import Collator, encode
    from common.compare import sample_batch
    from ofa_bert.export_model import INPUTS
    from ofa_bert.submodel import count_parameters, load_submodel

    out = str(ofa_run["root"] / "export")
    proc = subprocess.run([sys.executable, os.path.join(REPO, "ofa_bert", "export_model.py"), "--model_dir",
                           ofa_run["ofa_dir"], "--width_mult", "0.5", "--output_dir", out],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    cfg = ofa_run["cfg"]
    n_sub, n_full = expected_parameters(cfg, 0.5, 2), expected_parameters(cfg, 1.0, 2)
    assert f"with classifier {n_sub:,} of {n_full:,}" in proc.stdout
    with open(os.path.join(out, "export.json")) as f:
        report = json.load(f)
    assert report["parameters"]["model"] == n_sub and report["heads"] == 6 and report["intermediate_size"] == 32
    assert report["static"]["max_abs_diff"] <= 1e-5

    sub = load_submodel(out)
    assert count_parameters(sub) == n_sub
    # The exported model is the OFA sub-network: same dev accuracy as the OFA run measured.
    tokenizer = ppt.BertTokenizer.from_pretrained(out)
    dev = encode(read_split(ofa_run["data"], "sst2", "dev")[0], tokenizer, ["0", "1"], 128)
    batch = Collator(tokenizer.pad_token_id, False)(dev)
    with paddle.no_grad():
        logits = sub(batch["input_ids"], token_type_ids=batch["token_type_ids"], attention_mask=batch["attention_mask"])
    with open(os.path.join(ofa_run["ofa_dir"], "metrics.json")) as f:
        measured = json.load(f)["widths"]["0.5000"]["dev"]["accuracy"]
    assert glue_metrics(get_task("sst2"), logits.numpy(), batch["labels"].numpy())["accuracy"] == measured

    # The static model, loaded by paddle.inference here, matches the dynamic sub-model. Its attention is this
    # repo's operator, which this process registers first (as common.inference.Predictor does; without it the
    # test passed only after another test had loaded them).
    from common.train_kernels import kernels

    kernels()
    config = inference.Config(os.path.join(out, "inference.pdmodel"), os.path.join(out, "inference.pdiparams"))
    config.disable_gpu()
    config.disable_glog_info()
    predictor = inference.create_predictor(config)
    assert predictor.get_input_names() == list(INPUTS)
    sample = sample_batch(tokenizer)
    for name in INPUTS:
        predictor.get_input_handle(name).reshape(sample[name].shape)
        predictor.get_input_handle(name).copy_from_cpu(sample[name])
    predictor.run()
    static = predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu()
    with paddle.no_grad():
        dynamic = sub(**{k: paddle.to_tensor(sample[k]) for k in INPUTS}).numpy()
    assert np.abs(static - dynamic).max() <= 1e-5


def test_export_refuses_bad_width_and_mismatch(ofa_run, monkeypatch):
    from ofa_bert import export_model
    from ofa_bert.submodel import load_submodel

    out = ofa_run["root"] / "export-bad"
    with pytest.raises(UserError, match="width 0.2 was not trained by the OFA run in"):
        export_model.export(ofa_run["ofa_dir"], 0.2, str(out), 1e-5)
    monkeypatch.setattr(export_model, "Predictor", lambda prefix, options: lambda batch: [np.zeros((5, 2))])
    with pytest.raises(SystemExit) as exc:
        export_model.main(["--model_dir", ofa_run["ofa_dir"], "--width_mult", "0.5", "--output_dir", str(out)])
    assert exc.value.code == 1
    assert not out.exists()
    with pytest.raises(UserError, match="not an exported OFA sub-model"):
        load_submodel(ofa_run["teacher"])


def test_export_refuses_other_directories_and_untrained_widths(ofa_run):
    """A plain fine-tuned classifier (no width training), a width the OFA run did not train and the run's own
    directory as the output are refused, in one line on stderr (before PaddleNLP logs), writing nothing."""
    out = ofa_run["root"] / "export-refused"
    ofa_dir, teacher = ofa_run["ofa_dir"], ofa_run["teacher"]
    for model_dir, width, message in (
        (teacher, "0.5", f"{teacher}: not an ofa_bert/run_glue_ofa.py --output_dir (no args.json with its "
                         "width_mult_list)"),
        (ofa_dir, "0.75", f"width 0.75 was not trained by the OFA run in {ofa_dir} (its widths: 1, 0.5)"),
        (ofa_dir, "0", f"width 0 was not trained by the OFA run in {ofa_dir} (its widths: 1, 0.5)"),
    ):
        proc = run_script("ofa_bert/export_model.py", "--model_dir", model_dir, "--width_mult", width,
                          "--output_dir", str(out))
        assert user_error(proc, not_written=out) == message
    before = sorted(os.listdir(ofa_dir))
    proc = run_script("ofa_bert/export_model.py", "--model_dir", ofa_dir, "--width_mult", "0.5", "--output_dir", ofa_dir)
    assert user_error(proc) == (f"{ofa_dir}: the output directory is the input {ofa_dir}; writing it would delete "
                                "the input (choose another output directory)")
    assert sorted(os.listdir(ofa_dir)) == before


def test_trained_width_is_named_to_3_decimals(tmp_path):
    from ofa_bert.export_model import trained_width

    run = tmp_path / "ofa"
    run.mkdir()
    (run / "args.json").write_text(json.dumps({"width_mult_list": [1.0, 0.6666666666666666, 0.5, 1.0]}))
    with pytest.raises(UserError, match="the OFA run has not finished"):
        trained_width(str(run), 0.5)
    (run / "metrics.json").write_text("{}")
    for given in (0.6666666666666666, 0.6667, 0.667):
        assert trained_width(str(run), given) == 0.6666666666666666
    assert trained_width(str(run), 1) == 1.0 and trained_width(str(run), 0.5) == 0.5
    for given in (0.66, 0.75, 0):
        with pytest.raises(UserError, match=rf"^width {given:g} was not trained .* \(its widths: 1, 0.666667, 0.5\)$"):
            trained_width(str(run), given)
    (run / "args.json").write_text(json.dumps({"output_dir": str(run)}))  # e.g. ofa_bert/run_glue.py's
    with pytest.raises(UserError, match="not an ofa_bert/run_glue_ofa.py --output_dir"):
        trained_width(str(run), 0.5)
    with pytest.raises(UserError, match="does not exist"):
        trained_width(str(tmp_path / "missing"), 0.5)


def test_export_at_a_trained_width_given_to_3_decimals(ofa_run, tmp_path):
    """0.667 exports the run's 2/3 (stored as 0.6666666666666666): 8 of 12 heads."""
    from ofa_bert import export_model

    run = tmp_path / "ofa"
    shutil.copytree(ofa_run["ofa_dir"], run, ignore=shutil.ignore_patterns("checkpoint-*", "runs"))
    with open(run / "args.json") as f:
        args = json.load(f)
    (run / "args.json").write_text(json.dumps({**args, "width_mult_list": [1.0, 0.6666666666666666, 0.5]}))
    out = tmp_path / "export"
    report = export_model.main(["--model_dir", str(run), "--width_mult", "0.667", "--output_dir", str(out)])
    assert report["width_mult"] == 0.6666666666666666 and report["heads"] == 8 and report["intermediate_size"] == 43
    with open(out / "export.json") as f:
        assert json.load(f)["width_mult"] == 0.6666666666666666
    with open(out / "config.json") as f:
        assert json.load(f)["ofa_width_mult"] == 0.6666666666666666


@pytest.mark.parametrize("width", WIDTHS)
def test_submodel_parameters_closed_form(width):
    import paddle
    import paddlenlp.transformers as ppt

    from ofa_bert.submodel import count_parameters, extract_submodel

    cfg = dict(vocab_size=62, num_hidden_layers=2, max_position_embeddings=64, type_vocab_size=2, **TINY)
    paddle.seed(0)
    model = ppt.BertForSequenceClassification(ppt.BertConfig(**cfg, num_labels=3))
    model.eval()
    sub = extract_submodel(model, width)
    assert count_parameters(sub) == expected_parameters(cfg, width, 3)
    ids = paddle.to_tensor([[2, 10, 11, 3, 0]])
    with paddle.no_grad():
        logits = sub(ids)
        if width == 1.0:  # the full-width sub-model is the model itself
            assert np.abs((logits - model(ids)).numpy()).max() == 0


def test_widths_must_keep_whole_heads():
    import paddlenlp.transformers as ppt

    from ofa_bert.submodel import width_dims

    config = ppt.BertConfig(hidden_size=48, num_attention_heads=12, intermediate_size=64)
    assert [width_dims(config, w) for w in WIDTHS] == [(12, 64), (10, 53), (8, 43), (6, 32)]
    with pytest.raises(UserError, match="keeps 8.4 of 12 attention heads; use a multiple of 1/12"):
        width_dims(config, 0.7)
    with pytest.raises(UserError, match="must be in"):
        width_dims(config, 0)


def test_bert_base_closed_form():
    """The numbers quoted in ofa_bert/README.md (bert-base-uncased: type_vocab_size 2)."""
    base = dict(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                intermediate_size=3072, max_position_embeddings=512, type_vocab_size=2)
    assert [expected_parameters(base, w, 0) for w in WIDTHS] == [109482240, 95315712, 81149184, 66982656]


def test_tinybert_fit_denses_are_skipped(tmp_path):
    """TinyBERT general checkpoints (pytorch_model.bin) carry fit_denses.<i> Linears: skipped."""
    import torch
    from safetensors.torch import load_file

    from common.compare import compare

    torch_dir = save_tiny(str(tmp_path / "torch"), "bert", **TINY)
    weights = os.path.join(torch_dir, "model.safetensors")
    state = load_file(weights)
    extra = {f"fit_denses.{i}.{p}": torch.ones((96, 48) if p == "weight" else (96,))
             for i in range(3) for p in ("weight", "bias")}
    extra["fit_dense.weight"], extra["fit_dense.bias"] = torch.ones((96, 48)), torch.ones(96)
    torch.save({**state, **extra}, os.path.join(torch_dir, "pytorch_model.bin"))
    os.remove(weights)
    report = convert_checkpoint(torch_dir, str(tmp_path / "paddle"), SPEC, quiet=True)
    assert sorted(report.skipped) == sorted(extra)
    assert max(d.max_abs for d in compare(torch_dir, str(tmp_path / "paddle"))) <= 1e-5


def test_time_distill_runs_both_distillations_with_the_same_losses(tmp_path):
    """ofa_bert/time_distill.py on a tiny config: ours and PaddleSlim's loop draw the same dropout masks and
    compute the same losses (paddle's kernels); with this repo's kernels the losses stay close."""
    def run(distill, kernels):
        out = tmp_path / f"{distill}_{kernels}"
        proc = subprocess.run([sys.executable, os.path.join(REPO, "ofa_bert", "time_distill.py"), "--quick",
                               "--seq_len", "16", "--batch_size", "4", "--steps", "2", "--distill", distill,
                               "--train_kernels", kernels, "--output_dir", str(out)],
                              capture_output=True, text=True, cwd=REPO, timeout=300)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        assert f"({distill} distillation, train_kernels {kernels.title()}, 4 widths, batch 4 x 16" in proc.stdout
        with open(out / "metrics.json") as f:
            return json.load(f)

    ours, theirs = run("ours", "false"), run("paddleslim", "false")
    assert len(ours["losses"]) == 3 and all(len(step) == 4 for step in ours["losses"])  # warm-up + 2 steps
    assert ours["losses"] == theirs["losses"]
    assert len(ours["runs_ms"]) == 2 and ours["ms_per_step"] > 0
    fast = run("ours", "true")
    assert fast["train_kernels"] is True and fast["quick"] is True and fast["cpu"]
    np.testing.assert_allclose(fast["losses"][0], ours["losses"][0], rtol=0.05)  # dropout draws differ

    from ofa_bert import time_distill

    time_distill.main(["--table", str(tmp_path)])
    lines = (tmp_path / "results.md").read_text().splitlines()
    assert lines[0].startswith("| model | distillation | train kernels |") and len(lines) == 5
    by_run = {tuple(cell.strip() for cell in line.split("|")[2:4]): line for line in lines[2:]}
    speedup = {run: line.split("|")[-2].strip() for run, line in by_run.items()}
    assert speedup[("paddleslim", "false")] == "1.00x"
    for run, metrics in ((("ours", "false"), ours), (("ours", "true"), fast)):
        assert speedup[run] == f"{theirs['ms_per_step'] / metrics['ms_per_step']:.2f}x"
    assert all(line.startswith("| bert-base-uncased (--quick) | ") for line in lines[2:])


def test_time_distill_refuses_bad_input(tmp_path):
    from ofa_bert import time_distill

    with pytest.raises(UserError, match="--output_dir is required"):
        time_distill.main([])
    with pytest.raises(UserError, match="no metrics.json of time_distill.py under it"):
        time_distill.main(["--table", str(tmp_path)])

    with pytest.raises(UserError, match="unknown model: squeezebert-uncased"):
        time_distill.main(["--model", "squeezebert-uncased", "--output_dir", str(tmp_path / "x")])
    with pytest.raises(UserError, match="--seq_len 128: bert-base-uncased has 64 positions"):
        time_distill.main(["--quick", "--output_dir", str(tmp_path / "x")])
    with pytest.raises(SystemExit) as exc:
        time_distill.parse_args(["--train_kernels", "yes", "--output_dir", "x"])
    assert exc.value.code == 2
    assert not (tmp_path / "x").exists()
