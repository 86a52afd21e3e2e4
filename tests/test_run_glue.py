"""GLUE fine-tuning through common/train_glue.py on tiny SqueezeBERTs."""
import json
import os
import random
import subprocess
import sys

import pytest

from common.errors import UserError
from common.train_glue import glue_main, no_decay, param_groups
from conftest import REPO, run_script, user_error

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
    from conftest import SQUEEZE
    from squeezebert.spec import SPEC
    from tiny_checkpoints import save_tiny

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
