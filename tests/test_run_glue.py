"""GLUE fine-tuning through common/train_glue.py on tiny SqueezeBERTs."""
import json
import os
import random
import shutil
import subprocess
import sys

import pytest

from common.errors import UserError
from common.train_glue import glue_main, head_size, no_decay, param_groups
from common.train_state import checkpoints, rotate_checkpoints
from conftest import REPO, SQUEEZE, run_script, user_error
from tiny_checkpoints import save_tiny

POSITIVE = "good great fun love best".split()
NEGATIVE = "bad awful boring hate worst".split()
FILLER = "the movie film plot acting story was very".split()


def keyword_task(path, n_train=200, n_dev=60, seed=0):
    """SST-2 layout; the label is whether the one sentiment word is positive (learnable)."""
    rng = random.Random(seed)
    os.makedirs(path, exist_ok=True)
    for split, n in (("train", n_train), ("dev", n_dev)):
        with open(os.path.join(path, f"{split}.tsv"), "w") as f:
            f.write("sentence\tlabel\n")
            for _ in range(n):
                label = rng.randint(0, 1)
                words = rng.sample(FILLER, 4) + [rng.choice(POSITIVE if label else NEGATIVE)]
                rng.shuffle(words)
                f.write(" ".join(words) + f"\t{label}\n")
    return str(path)


def stsb_task(path, n=24, seed=0):
    rng = random.Random(seed)
    os.makedirs(path, exist_ok=True)
    header = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
    for split in ("train", "dev"):
        with open(os.path.join(path, f"{split}.tsv"), "w") as f:
            f.write(header)
            for i in range(n):
                a, b = " ".join(rng.sample(FILLER, 3)), " ".join(rng.sample(FILLER, 3))
                f.write(f"{i}\tmain\tx\t2012\t{i}\tnone\tnone\t{a}\t{b}\t{rng.uniform(0, 5):.3f}\n")
    return str(path)


def run(paddle_dir, data_dir, out, task="sst2", *extra):
    argv = ["--model_name_or_path", paddle_dir, "--task_name", task, "--data_dir", data_dir,
            "--output_dir", str(out), "--per_device_train_batch_size", "16", "--seed", "5",
            "--logging_steps", "5", "--disable_tqdm", "true", "--report_to", "none", *extra]
    return glue_main("squeezebert", "SqueezeBertForSequenceClassification", argv)


def test_tiny_run_writes_metrics_and_resumes(squeezebert_dirs, tmp_path):
    _, paddle_dir = squeezebert_dirs["base"]
    data = keyword_task(tmp_path / "data")
    out = tmp_path / "run"
    first = run(paddle_dir, data, out, "sst2", "--do_train", "--max_steps", "6", "--save_steps", "3",
                "--max_train_samples", "64", "--max_eval_samples", "20")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(first))
    assert metrics["dev"]["samples"] == 20 and metrics["train"]["train_samples"] == 64
    assert set(metrics["dev"]) >= {"accuracy", "loss"}
    args = json.loads((out / "args.json").read_text())
    assert args["data"]["max_train_samples"] == 64 and args["training"]["seed"] == 5
    assert (out / "model_state.pdparams").is_file() and (out / "checkpoint-6").is_dir()

    # Same output dir, more steps: continues from checkpoint-6 instead of starting over.
    run(paddle_dir, data, out, "sst2", "--do_train", "--max_steps", "9", "--save_steps", "3",
        "--max_train_samples", "64", "--max_eval_samples", "20")
    state = json.loads((out / "checkpoint-9" / "trainer_state.json").read_text())
    assert state["global_step"] == 9
    steps_logged = [h["step"] for h in state["log_history"] if "loss" in h]
    assert steps_logged == [5]  # the loss at step 5 was logged once: by the first run, not again


def test_learns_a_learnable_task(squeezebert_dirs, tmp_path):
    _, paddle_dir = squeezebert_dirs["base"]
    data = keyword_task(tmp_path / "data")
    metrics = run(paddle_dir, data, tmp_path / "run", "sst2", "--do_train", "--num_train_epochs", "8",
                  "--learning_rate", "3e-3", "--warmup_ratio", "0.1", "--save_steps", "100")
    assert metrics["dev"]["accuracy"] >= 0.9


def test_regression_task_reports_pearson_and_spearman(squeezebert_dirs, tmp_path):
    _, paddle_dir = squeezebert_dirs["base"]
    metrics = run(paddle_dir, stsb_task(tmp_path / "stsb"), tmp_path / "run", "sts-b", "--do_train",
                  "--max_steps", "2", "--save_steps", "100")
    assert metrics["labels"] is None
    assert {"pearson", "spearman"} <= set(metrics["dev"])
    assert "accuracy" not in metrics["dev"]


def test_existing_head_must_fit_the_task(squeezebert_dirs, tmp_path):
    _, paddle_dir = squeezebert_dirs["classification"]  # 3-way head
    with pytest.raises(UserError, match="head has 3 labels, task sst2 needs 2"):
        run(paddle_dir, keyword_task(tmp_path / "data"), tmp_path / "run", "sst2")
    assert not (tmp_path / "run").exists()


def test_no_weight_decay_on_bias_and_norms(squeezebert_dirs):
    import paddlenlp.transformers as ppt

    _, paddle_dir = squeezebert_dirs["base"]
    model = ppt.SqueezeBertForSequenceClassification.from_pretrained(paddle_dir, num_labels=2)
    assert no_decay("squeezebert.embeddings.LayerNorm.weight")  # PaddleNLP's own rule misses this one
    assert no_decay("squeezebert.encoder.layers.0.output.layernorm.weight")
    assert not no_decay("squeezebert.encoder.layers.0.output.conv1d.weight")
    groups = param_groups(model, 0.01)
    decayed = {p.name for g in groups if g["weight_decay"] for p in g["params"]}
    names = {p.name: n for n, p in model.named_parameters()}
    assert all(not no_decay(names[p]) for p in decayed)
    assert sum(len(g["params"]) for g in groups) == len(names)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--task_name", "wnli"], "unknown task 'wnli'; choose one of: cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte"),
        (["--data_dir", "./MISSING"], "GLUE data directory not found: ./MISSING"),
        (["--model_name_or_path", "./MISSING"], "model directory './MISSING' does not exist or is not a directory"),
        (["--model_name_or_path", "squeezebert/squeezebert-mnli"], "model directory 'squeezebert/squeezebert-mnli' "
         "is not a local directory; hub names cannot be downloaded here (no internet): download the checkpoint "
         "elsewhere and pass its directory"),
        (["--resume_from_checkpoint", "./MISSING"], "--resume_from_checkpoint ./MISSING: no such directory"),
    ],
)
def test_bad_input_exits_2_with_one_line(squeezebert_dirs, tmp_path, args, message):
    _, paddle_dir = squeezebert_dirs["base"]
    base = {"--model_name_or_path": paddle_dir, "--task_name": "sst2",
            "--data_dir": keyword_task(tmp_path / "data", 8, 4), "--output_dir": str(tmp_path / "run")}
    base.update(dict(zip(args[::2], args[1::2])))
    argv = [x for kv in base.items() for x in kv] + ["--do_train"]
    proc = run_script("squeezebert/run_glue.py", *argv, cwd=tmp_path)
    assert user_error(proc, not_written=tmp_path / "run") == message


def test_wrong_model_type_is_refused(squeezebert_dirs, tmp_path):
    torch_dir, _ = squeezebert_dirs["base"]  # a torch checkpoint, not converted
    with pytest.raises(UserError, match="no model_state.pdparams"):
        run(torch_dir, keyword_task(tmp_path / "data", 8, 4), tmp_path / "run")


def test_data_parallel_on_two_cpu_processes(squeezebert_dirs, tmp_path):
    """The same script under paddle.distributed.launch: 2 ranks, global batch 16, rank 0 writes."""
    _, paddle_dir = squeezebert_dirs["base"]
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2", "--log_dir", str(tmp_path / "log"),
         os.path.join(REPO, "squeezebert", "run_glue.py"), "--model_name_or_path", paddle_dir, "--task_name", "sst2",
         "--data_dir", keyword_task(tmp_path / "data", 64, 20), "--output_dir", str(out), "--do_train",
         "--max_steps", "4", "--save_steps", "2", "--per_device_train_batch_size", "8", "--report_to", "none"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )
    logs = sorted((tmp_path / "log").glob("workerlog.*"))
    assert proc.returncode == 0, "\n".join(f"--- {p.name}:\n{p.read_text()[-1500:]}" for p in logs) + proc.stderr[-1000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2
    state = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4 and state["epoch"] == 1.0  # 64 samples = 4 steps of 2 x 8
    for rank in (0, 1):
        assert "sst2 dev: accuracy=" in (tmp_path / "log" / f"workerlog.{rank}").read_text()


def mnli_dev(path, rows):
    os.makedirs(path, exist_ok=True)
    head = ("index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\t"
            "sentence2_parse\tsentence1\tsentence2\tlabel1\tlabel2\tlabel3\tlabel4\tlabel5\tgold_label\n")
    for split in ("dev_matched", "dev_mismatched"):
        with open(os.path.join(path, f"{split}.tsv"), "w") as f:
            f.write(head)
            for i, (a, b, y) in enumerate(rows):
                f.write(f"{i}\t0\t0\tfiction\tx\tx\tx\tx\t{a}\t{b}\t{y}\t{y}\t{y}\t{y}\t{y}\t{y}\n")
    return str(path)


def test_mnli_head_keeps_its_label_meaning(tmp_path):
    """A trained 3-way head named in its own order: evaluation maps gold labels to that order."""
    import paddle

    from common.convert import convert_checkpoint
    from squeezebert.spec import SPEC

    id2label = {0: "entailment", 1: "neutral", 2: "contradiction"}
    torch_dir = save_tiny(str(tmp_path / "torch"), "squeezebert", head="classification", id2label=id2label,
                          label2id={v: k for k, v in id2label.items()}, **SQUEEZE)
    paddle_dir = str(tmp_path / "paddle")
    convert_checkpoint(torch_dir, paddle_dir, SPEC, quiet=True)
    # Make the head always answer class id 2 (its "contradiction").
    state = paddle.load(os.path.join(paddle_dir, "model_state.pdparams"))
    state["classifier.weight"] = paddle.zeros_like(state["classifier.weight"])
    state["classifier.bias"] = paddle.to_tensor([0.0, 0.0, 50.0])
    paddle.save(state, os.path.join(paddle_dir, "model_state.pdparams"))

    rows = [("the movie", "a film", "contradiction")] * 3 + [("the plot", "a story", "entailment")]
    metrics = run(paddle_dir, mnli_dev(tmp_path / "mnli", rows), tmp_path / "run", "mnli")
    assert metrics["labels"] == ["entailment", "neutral", "contradiction"]
    assert metrics["dev_matched"]["accuracy"] == 0.75
    assert metrics["dev_mismatched"]["accuracy"] == 0.75


def test_ranks_leave_together(tmp_path):
    """common.distributed.leave_together holds each rank until the slowest one gets there."""
    script = tmp_path / "ranks.py"
    script.write_text(
        "import time\nimport common\nimport paddle.distributed as dist\nfrom common.distributed import leave_together\n"
        "dist.init_parallel_env()\n"
        "if dist.get_rank() == 0:\n    time.sleep(3)\n"
        "start = time.time()\nleave_together()\n"
        "print(f'rank {dist.get_rank()} waited {time.time() - start:.2f}', flush=True)\n"
    )
    proc = subprocess.run([sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2",
                           "--log_dir", str(tmp_path / "log"), str(script)],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    waited = {}
    for rank in (0, 1):
        line = next(x for x in (tmp_path / "log" / f"workerlog.{rank}").read_text().splitlines() if x.startswith("rank "))
        waited[rank] = float(line.split()[-1])
    assert waited[1] > 2.0 and waited[0] < 1.0


# ---- checkpoints: rotation, starting afresh, resuming ----

SHORT = ("--do_train", "--max_train_samples", "32", "--max_eval_samples", "8", "--save_steps", "2")  # 2 steps an epoch


def checkpoint_names(out) -> list[str]:
    return [os.path.basename(path) for path in checkpoints(str(out))]


@pytest.mark.parametrize("limit, best, kept", [
    (2, None, [8, 10]), (1, 4, [4, 10]), (1, 10, [10]), (2, 2, [2, 10]), (3, 2, [2, 8, 10]),
    (0, 4, [2, 4, 8, 10]), (None, None, [2, 4, 8, 10]),
])
def test_rotation_keeps_the_newest_and_the_best(tmp_path, limit, best, kept):
    for step in (2, 4, 8, 10):
        (tmp_path / f"checkpoint-{step}").mkdir()
    rotate_checkpoints(str(tmp_path), limit, best and str(tmp_path / f"checkpoint-{best}"))
    assert checkpoint_names(tmp_path) == [f"checkpoint-{step}" for step in kept]


def test_save_total_limit_in_a_single_process(squeezebert_dirs, tmp_path):
    """PaddleNLP 2.8.1 rotates only on local rank 0 of a distributed run; run_glue rotates a lone process too."""
    _, paddle_dir = squeezebert_dirs["base"]
    out = tmp_path / "run"
    run(paddle_dir, keyword_task(tmp_path / "data", 32, 8), out, "sst2", *SHORT, "--max_steps", "8",
        "--save_total_limit", "1")
    best = json.loads((out / "checkpoint-8" / "trainer_state.json").read_text())["best_model_checkpoint"]
    assert set(checkpoint_names(out)) == {os.path.basename(best), "checkpoint-8"}


def test_overwrite_output_dir_starts_afresh(squeezebert_dirs, tmp_path):
    """The overwriting run deletes the earlier run's checkpoints: the next rerun resumes from its own."""
    _, paddle_dir = squeezebert_dirs["base"]
    data, out = keyword_task(tmp_path / "data", 32, 8), tmp_path / "run"
    run(paddle_dir, data, out, "sst2", *SHORT, "--max_steps", "6")
    assert checkpoint_names(out)[-1] == "checkpoint-6"
    run(paddle_dir, data, out, "sst2", *SHORT, "--max_steps", "2", "--overwrite_output_dir")
    assert checkpoint_names(out) == ["checkpoint-2"]
    metrics = run(paddle_dir, data, out, "sst2", *SHORT, "--max_steps", "4")
    assert checkpoint_names(out) == ["checkpoint-2", "checkpoint-4"]
    assert metrics["train"]["train_loss"] > 0
    state = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())
    assert [h["step"] for h in state["log_history"] if "eval_loss" in h] == [2, 4]


@pytest.fixture(scope="module")
def sst2_run(squeezebert_dirs, tmp_path_factory):
    """(model dir, data dir, output dir) of a 4-step sst2 run with checkpoint-2 and checkpoint-4."""
    _, paddle_dir = squeezebert_dirs["base"]
    root = tmp_path_factory.mktemp("sst2-run")
    data, out = keyword_task(root / "data", 32, 8), root / "run"
    run(paddle_dir, data, out, "sst2", *SHORT, "--max_steps", "4")
    assert checkpoint_names(out) == ["checkpoint-2", "checkpoint-4"]
    return paddle_dir, data, out


def test_resume_from_checkpoint_into_a_new_output_dir(sst2_run, tmp_path):
    paddle_dir, data, src = sst2_run
    out = tmp_path / "new" / "run"
    run(paddle_dir, data, out, "sst2", *SHORT, "--max_steps", "6",
        "--resume_from_checkpoint", str(src / "checkpoint-4"))
    assert checkpoint_names(out) == ["checkpoint-6"]
    state = json.loads((out / "checkpoint-6" / "trainer_state.json").read_text())
    assert state["global_step"] == 6 and [h["step"] for h in state["log_history"] if "eval_loss" in h] == [2, 4, 6]


def test_bad_resume_is_refused_before_writing(sst2_run, tmp_path):
    paddle_dir, data, out = sst2_run
    args_json = (out / "args.json").read_text()
    (tmp_path / "empty").mkdir()
    other_model = shutil.copytree(paddle_dir, tmp_path / "other-model")
    stsb = stsb_task(tmp_path / "stsb", 8)
    cases = [
        ((paddle_dir, data, "sst2", "--resume_from_checkpoint", str(tmp_path / "missing")),
         f"--resume_from_checkpoint {tmp_path / 'missing'}: no such directory"),
        ((paddle_dir, data, "sst2", "--resume_from_checkpoint", str(tmp_path / "empty")),
         f"{tmp_path / 'empty'}: no model_state.pdparams (not a checkpoint-<step> folder of a finished save)"),
        ((paddle_dir, data, "sst2", "--resume_from_checkpoint", str(out / "checkpoint-2"), "--overwrite_output_dir"),
         "--resume_from_checkpoint and --overwrite_output_dir exclude each other"),
        ((str(other_model), stsb, "stsb"),
         f"{out}: its checkpoints are of a run with other arguments (--model_name_or_path {paddle_dir!r} there, "
         f"{str(other_model)!r} here; --task_name 'sst2' there, 'stsb' here); start afresh with "
         "--overwrite_output_dir or another --output_dir"),
    ]
    for (model, data_dir, task, *extra), message in cases:
        with pytest.raises(UserError) as exc:
            run(model, data_dir, out, task, *SHORT, "--max_steps", "6", *extra)
        assert str(exc.value) == message
    assert (out / "args.json").read_text() == args_json
    assert checkpoint_names(out) == ["checkpoint-2", "checkpoint-4"]
    # The same model directory and task, otherwise spelled: resumed (in a copy of the run).
    copy = shutil.copytree(out, tmp_path / "copy")
    run(os.path.relpath(paddle_dir), data, copy, "SST-2", *SHORT, "--max_steps", "6")
    state = json.loads((copy / "checkpoint-6" / "trainer_state.json").read_text())
    assert [h["step"] for h in state["log_history"] if "eval_loss" in h] == [2, 4, 6]


@pytest.mark.parametrize("config, size", [
    ({}, 2), ({"id2label": {"0": "a", "1": "b", "2": "c"}}, 3), ({"num_labels": 1}, 1), ({"num_classes": 3}, 3),
])
def test_head_size_from_the_config(config, size):
    assert head_size(config) == size


def test_binary_head_without_id2label_must_fit_the_task(tmp_path):
    """Hugging Face leaves id2label out of config.json for 2 labels: the head is still checked, exit 2."""
    from common.convert import convert_checkpoint
    from squeezebert.spec import SPEC

    paddle_dir = str(tmp_path / "paddle")
    convert_checkpoint(save_tiny(str(tmp_path / "torch"), "squeezebert", head="classification", **SQUEEZE),
                       paddle_dir, SPEC, quiet=True)
    assert not {"id2label", "num_labels"} & set(json.loads((tmp_path / "paddle" / "config.json").read_text()))
    mnli = mnli_dev(tmp_path / "mnli", [("the movie", "a film", "entailment")])
    proc = run_script("squeezebert/run_glue.py", "--model_name_or_path", paddle_dir, "--task_name", "mnli",
                      "--data_dir", mnli, "--output_dir", "run", "--report_to", "none", cwd=tmp_path)
    message = user_error(proc, not_written=tmp_path / "run")
    assert message == f"{paddle_dir}: the checkpoint's head has 2 labels, task mnli needs 3"
    metrics = run(paddle_dir, keyword_task(tmp_path / "sst2", 8, 4), tmp_path / "sst2-run", "sst2")
    assert metrics["labels"] == ["0", "1"] and metrics["dev"]["samples"] == 4


def test_inputs_longer_than_the_model_are_refused(squeezebert_dirs, tmp_path):
    """A --max_seq_length beyond max_position_embeddings (64 here) that lets longer inputs through."""
    _, paddle_dir = squeezebert_dirs["base"]
    data = keyword_task(tmp_path / "data", 8, 4)
    with open(os.path.join(data, "dev.tsv"), "a") as f:
        f.write(" ".join(["good"] * 80) + "\t1\n")
    out = tmp_path / "run"
    with pytest.raises(UserError) as exc:
        run(paddle_dir, data, out, "sst2", "--max_seq_length", "100")
    assert str(exc.value) == (f"--max_seq_length 100: {paddle_dir} takes at most 64 tokens (max_position_embeddings), "
                              "the data has inputs of 82; pass at most 64")
    assert not out.exists()
    assert run(paddle_dir, data, out, "sst2", "--max_seq_length", "64")["dev"]["samples"] == 5
