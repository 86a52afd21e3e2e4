"""FLOP counts, static export + paddle.inference against dygraph, and the benchmark end to end."""
import json
import subprocess

import numpy as np
import pytest
import torch
import transformers

from common.bench_models import MODELS
from common.errors import UserError
from common.flops import forward_flops
from common.hardware import onednn_bf16_missing
from conftest import REPO, run_script, user_error
from tiny_checkpoints import padded_batch, randomize, save_tiny

# Tiny configs shaped like the real ones (groups, bottlenecks, head_ratio, embedding projection):
# name -> (model_type, config overrides), for the export checks.
TINY = {
    "bert": ("bert", {}),
    "squeezebert": ("squeezebert", dict(embedding_size=32, q_groups=2, k_groups=2, v_groups=2, intermediate_groups=2,
                                        output_groups=2)),
    "convbert-small": ("convbert", dict(embedding_size=16, pad_token_id=0)),
    "convbert-base": ("convbert", dict(embedding_size=32, pad_token_id=0)),
    "mobilebert": ("mobilebert", dict(embedding_size=16, intra_bottleneck_size=16, true_hidden_size=16,
                                      intermediate_size=32, num_feedforward_networks=2)),
}


EXPORTED = ["bert", "squeezebert", "convbert-small", "convbert-base", "mobilebert"]


# ---------------------------------------------------------------- FLOPs


@pytest.mark.parametrize("seq", [64, 128, 256])
def test_bert_base_flops_closed_form(seq):
    h, i, s = 768, 3072, seq
    assert forward_flops(transformers.BertConfig().to_dict(), s) == 12 * (2 * s * (4 * h * h + 2 * h * i) + 4 * s * s * h)
    assert forward_flops(transformers.BertConfig().to_dict(), 128) == 22_347_251_712  # ~22.3 GFLOPs


@pytest.mark.parametrize("seq", [64, 128, 256])
def test_squeezebert_flops_closed_form(seq):
    """q/k/v, intermediate and output convolutions in 4 groups, post-attention dense."""
    h, i, s = 768, 3072, seq
    layer = 2 * s * (3 * h * h // 4 + h * h + h * i // 4 + i * h // 4) + 4 * s * s * h
    assert forward_flops(transformers.SqueezeBertConfig().to_dict(), s) == 12 * layer
    assert round(forward_flops(transformers.SqueezeBertConfig().to_dict(), 128) / 1e9, 1) == 7.4


FLOP_CASES = {
    "bert": transformers.BertConfig(hidden_size=64, num_attention_heads=4, intermediate_size=96),
    "bert-pruned": transformers.BertConfig(hidden_size=64, num_attention_heads=4, intermediate_size=96,
                                           pruned_heads={0: [1], 1: [0, 2]}),
    "squeezebert": transformers.SqueezeBertConfig(hidden_size=64, embedding_size=64, num_attention_heads=4,
                                                  intermediate_size=128, q_groups=2, k_groups=4, output_groups=2),
    "mobilebert": transformers.MobileBertConfig(hidden_size=64, embedding_size=16, intra_bottleneck_size=32,
                                                true_hidden_size=32, num_attention_heads=4, intermediate_size=48,
                                                num_feedforward_networks=3),
    "mobilebert-bottleneck-attention": transformers.MobileBertConfig(
        hidden_size=64, embedding_size=16, intra_bottleneck_size=32, true_hidden_size=32, num_attention_heads=4,
        intermediate_size=48, use_bottleneck_attention=True, trigram_input=False),
    "convbert": transformers.ConvBertConfig(hidden_size=64, embedding_size=32, num_attention_heads=4,
                                            intermediate_size=96, num_groups=2),
    "convbert-one-head": transformers.ConvBertConfig(hidden_size=64, embedding_size=64, num_attention_heads=2,
                                                     head_ratio=4, conv_kernel_size=5, intermediate_size=96),
}


@pytest.mark.parametrize("name", list(FLOP_CASES))
def test_flops_match_torch_flop_counter(name):
    """Our count equals torch's FlopCounterMode on the HF model (minus its [CLS] pooler)."""
    from torch.utils.flop_counter import FlopCounterMode

    config = FLOP_CASES[name]
    config.update(dict(num_hidden_layers=2, vocab_size=100))
    model = transformers.AutoModel.from_config(config, attn_implementation="eager").eval()
    ids = torch.randint(5, 100, (1, 16))
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(input_ids=ids, attention_mask=torch.ones_like(ids))
    pooler = 2 * config.hidden_size**2 if getattr(model, "pooler", None) is not None else 0
    assert forward_flops(config.to_dict(), 16) == counter.get_total_flops() - pooler


def test_flops_unknown_model_type():
    with pytest.raises(UserError, match="no FLOP count"):
        forward_flops({"model_type": "gpt2"}, 8)


# ---------------------------------------------------------------- export


@pytest.fixture(scope="module")
def classifiers(tmp_path_factory):
    """{name: converted tiny classifier directory} for :data:`TINY`."""
    import importlib

    from common.bench_models import SPECS
    from common.convert import convert_checkpoint

    root = tmp_path_factory.mktemp("export")
    dirs = {}
    for name, (model_type, extra) in TINY.items():
        torch_dir = save_tiny(str(root / f"{name}-torch"), model_type, head="classification", **extra)
        dirs[name] = str(root / f"{name}-paddle")
        convert_checkpoint(torch_dir, dirs[name], importlib.import_module(SPECS[model_type]).SPEC, quiet=True)
    return dirs


@pytest.mark.parametrize("name", EXPORTED)
def test_export_matches_dygraph(name, classifiers, tmp_path, capsys):
    """export.py: within 1e-4 of dygraph on the padded comparison batch (checked by the CLI itself),
    then any other batch shape through paddle.inference, fp32 with and without oneDNN; bf16 runs."""
    import export
    from common.inference import Predictor, PredictorOptions, max_abs_diff, run_dygraph
    from common.models import load_model_dir

    out = tmp_path / "static"
    assert export.main(["--model_dir", classifiers[name], "--output_dir", str(out)]) == 0
    assert "OK: within atol 1.0e-04" in capsys.readouterr().out
    report = json.loads((out / "export.json").read_text())
    assert report["ok"] and report["outputs"] == ["logits"] and report["worst"] <= 1e-4
    assert report["check_batch"]["padded"] and set(report["max_abs_diff"]) == {"onednn", "native"}
    assert report["last_layer_at_cls"] is True  # every model type's classifier: common/first_token.py

    model = load_model_dir(classifiers[name])
    batch = padded_batch(3, 13, seed=7)
    ref = run_dygraph(model, batch)
    for onednn in (True, False):
        got = Predictor(str(out / "inference"), PredictorOptions(threads=2, onednn=onednn))(batch)
        assert max(max_abs_diff(ref, got)) <= 1e-4
    if onednn_bf16_missing():  # e.g. an AVX2-only CPU, where paddle would run fp32 and call it bf16
        with pytest.raises(UserError, match="bf16 on CPU: paddle's oneDNN bfloat16 kernels need AVX-512; this CPU lacks avx512"):
            Predictor(str(out / "inference"), PredictorOptions(threads=2, precision="bf16"))
    else:
        bf16 = Predictor(str(out / "inference"), PredictorOptions(threads=2, precision="bf16"))(batch)
        assert bf16[0].shape == ref[0].shape and np.isfinite(bf16[0]).all()
        assert 0 < max(max_abs_diff(ref, bf16)) < 0.05  # bf16 really ran


@pytest.mark.parametrize("name", EXPORTED)
def test_export_onnx_matches_dygraph(name, classifiers, tmp_path, capsys):
    """export.py --onnx: paddle2onnx's model in onnxruntime is within 1e-4 of dygraph on the padded
    comparison batch (checked by the CLI) and on another padded two-segment batch shape."""
    import export
    from common.inference import max_abs_diff, op_types_of, run_dygraph
    from common.models import load_model_dir
    from common.onnx_runtime import OnnxPredictor

    out = tmp_path / "static"
    assert export.main(["--model_dir", classifiers[name], "--output_dir", str(out), "--onnx"]) == 0
    assert "onnxruntime logits max_abs_diff=" in capsys.readouterr().out
    report = json.loads((out / "export.json").read_text())
    assert report["onnx"] and report["portable"] and report["max_abs_diff"]["onnxruntime"]["logits"] <= 1e-4
    assert not any(t.startswith("ct_") for t in op_types_of(str(out / "inference")))
    batch = padded_batch(4, 11, seed=5)
    got = OnnxPredictor(str(out / "inference.onnx"), threads=2)(batch)
    assert max(max_abs_diff(run_dygraph(load_model_dir(classifiers[name]), batch), got)) <= 1e-4


def test_onnx_conversion_refuses_this_repos_operators(classifiers, tmp_path):
    import export
    from common.onnx_runtime import convert_to_onnx

    assert export.main(["--model_dir", classifiers["convbert-small"], "--output_dir", str(tmp_path / "fast")]) == 0
    prefix = str(tmp_path / "fast" / "inference")
    with pytest.raises(UserError, match=r"inference.pdmodel: holds this repo's CPU operators \(ct_span_conv\), "
                                        r"which paddle2onnx cannot convert; export with --portable"):
        convert_to_onnx(prefix, str(tmp_path / "x.onnx"))
    assert not (tmp_path / "x.onnx").exists()


def test_convbert_export_span_operator_and_portable(classifiers, tmp_path):
    """ConvBERT's span convolution is exported as this repo's operator, which a fresh process loads
    on its own; --portable keeps to paddle's operators (the same logits within 1e-5); the operator's
    export does not run on another device."""
    import subprocess
    import sys

    import export
    from common.inference import Predictor, PredictorOptions, max_abs_diff, op_types_of

    fast, portable = tmp_path / "fast", tmp_path / "portable"
    assert export.main(["--model_dir", classifiers["convbert-small"], "--output_dir", str(fast)]) == 0
    assert export.main(["--model_dir", classifiers["convbert-small"], "--output_dir", str(portable), "--portable"]) == 0
    ops = {d: op_types_of(str(d / "inference")) for d in (fast, portable)}
    assert "ct_span_conv" in ops[fast] and "stack" not in ops[fast]
    # portable: PaddleNLP's stacked slices, padded by concat (convbert.modeling.stacked_span_conv), no pad op
    assert not any(t.startswith("ct_") for t in ops[portable]) and "stack" in ops[portable]
    assert not {"pad", "pad3d"} & ops[portable]
    assert json.loads((portable / "export.json").read_text())["portable"] is True

    batch = padded_batch(3, 13, seed=3)
    np.savez(tmp_path / "batch.npz", **batch)
    ours = Predictor(str(fast / "inference"), PredictorOptions(threads=2))(batch)
    theirs = Predictor(str(portable / "inference"), PredictorOptions(threads=2))(batch)
    assert max(max_abs_diff(theirs, ours)) <= 1e-5
    code = ("import common, sys, numpy as np; from common.inference import Predictor, PredictorOptions; "
            "b = dict(np.load(sys.argv[2])); np.save(sys.argv[3], Predictor(sys.argv[1], PredictorOptions(threads=2))(b)[0])")
    subprocess.run([sys.executable, "-c", code, str(fast / "inference"), str(tmp_path / "batch.npz"),
                    str(tmp_path / "logits.npy")], check=True, cwd=REPO)
    np.testing.assert_allclose(np.load(tmp_path / "logits.npy"), ours[0], rtol=0, atol=1e-6)
    with pytest.raises(UserError, match=r"inference.pdmodel: holds this repo's CPU operators \(ct_span_conv\); "
                                        r"for another device, export with --portable"):
        Predictor(str(fast / "inference"), PredictorOptions(device="gpu"))


def test_export_base_model_outputs(tmp_path):
    """A base model exports (sequence_output, pooled_output)."""
    import export
    from common.convert import convert_checkpoint
    from ofa_bert.spec import SPEC

    torch_dir = save_tiny(str(tmp_path / "torch"), "bert")
    convert_checkpoint(torch_dir, str(tmp_path / "paddle"), SPEC, quiet=True)
    report = export.export(str(tmp_path / "paddle"), str(tmp_path / "static"), 1e-4, 2)
    assert report["ok"] and report["outputs"] == ["sequence_output", "pooled_output"]


def test_export_of_a_run_glue_output_dir(classifiers, tmp_path):
    """A fine-tuned run_glue output directory is a model directory."""
    import export
    from common.train_glue import glue_main
    from test_run_glue import keyword_task

    run = tmp_path / "run"
    glue_main("bert", "BertForSequenceClassification", [
        "--model_name_or_path", classifiers["bert"], "--task_name", "sst2", "--data_dir", keyword_task(tmp_path / "data"),
        "--output_dir", str(run), "--do_train", "--max_steps", "2", "--save_steps", "2", "--max_train_samples", "16",
        "--max_eval_samples", "8", "--per_device_train_batch_size", "8", "--report_to", "none", "--disable_tqdm", "true",
    ])
    assert export.main(["--model_dir", str(run), "--output_dir", str(tmp_path / "static")]) == 0


def test_export_over_tolerance_writes_nothing(classifiers, tmp_path, capsys):
    import export

    out = tmp_path / "static"
    assert export.main(["--model_dir", classifiers["bert"], "--output_dir", str(out), "--atol", "-1"]) == 1
    assert "FAIL" in capsys.readouterr().err and not out.exists()


def test_predictor_options_refused():
    import paddle

    from common.inference import PredictorOptions

    if not paddle.is_compiled_with_cuda():
        with pytest.raises(UserError, match="CPU-only build"):
            PredictorOptions(device="gpu").check()
    with pytest.raises(UserError, match="need device gpu"):
        PredictorOptions(tensorrt=True).check()
    with pytest.raises(UserError, match="onednn must be on"):
        PredictorOptions(precision="bf16", onednn=False).check()


# ---------------------------------------------------------------- benchmark


def test_benchmark_quick_end_to_end(tmp_path):
    import benchmark

    models = ["bert-base-uncased", "squeezebert-uncased", "conv-bert-small", "ofa-bert-base-w0.5", "mobilebert-uncased"]
    out = tmp_path / "bench"
    benchmark.main(["--quick", "--models", ",".join(models), "--output_dir", str(out)])
    results = json.loads((out / "results.json").read_text())
    assert set(results) == {"settings", "machine", "versions", "models", "results", "wall_s", "estimate_s"}
    assert set(results["machine"]) >= {"cpu", "threads", "ghz", "peak_fp32_gflops", "peak_bf16_gflops", "assumptions"}
    head = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout
    assert results["versions"]["code"].split("+")[0] == head.strip()  # the commit that was measured
    assert f"Code: commit {results['versions']['code']}; python " in (out / "results.md").read_text()
    assert set(results["models"]) == set(models)
    for summary in results["models"].values():
        assert summary["parity_max_abs_logit_diff"] < 1e-5 and summary["gflops_per_seq"] > 0
    # the classifiers' exports compute the last layer at [CLS] only: their exported rows count those FLOPs
    from common.flops import forward_flops

    for name, summary in results["models"].items():
        assert summary["first_token_export"] is True
        exported = forward_flops(summary["config"], 16, True)
        assert summary["exported_gflops_per_seq"] == exported / 1e9 < summary["gflops_per_seq"]
    rows = results["results"]
    for r in rows:
        summary = results["models"][r["model"]]
        gflops = summary["exported_gflops_per_seq" if r["backend"].startswith(("paddle_infer", "paddle_ort"))
                         else "train_gflops_per_seq" if r["kind"] == "train" else "gflops_per_seq"]
        assert r["gflop_per_s"] == pytest.approx(gflops * r["batch_size"] / r["ms_per_batch"] * 1e3)
    assert not [r for r in rows if "error" in r]
    # paddle.inference bf16 needs AVX-512 (common/hardware.py): by default it runs only where it is supported
    backends = [b for b in benchmark.INFERENCE_BACKENDS if b != "paddle_infer_bf16" or not onednn_bf16_missing()]
    inference = [r for r in rows if r["kind"] == "inference"]
    assert len(inference) == len(models) * len(backends) * 2  # batch sizes 1 and 2
    assert len([r for r in rows if r["kind"] == "train"]) == len(models) * len(benchmark.TRAIN_BACKENDS)
    for r in rows:
        assert {"ms_per_batch", "seq_per_s", "gflop_per_s", "pct_of_peak", "runs_ms"} <= set(r)
        assert r["ms_per_batch"] > 0 and len(r["runs_ms"]) == 2
        # bf16 rows carry their logits' distance from the same framework's fp32 logits: small, not zero
        assert ("max_abs_logit_diff_vs_fp32" in r) == (r["backend"] in benchmark.BF16_BACKENDS)
        if r["backend"] in benchmark.BF16_BACKENDS:
            assert 0 < r["max_abs_logit_diff_vs_fp32"] < 0.05
    table = (out / "results.md").read_text().splitlines()
    for model in models:
        for backend in backends:
            assert sum(line.startswith(f"| {model} | {backend} |") for line in table) == 1
        assert sum(line.startswith("| paddle's best fp32 path / torch eager fp32 <= 0.8 | " + model) for line in table) == 1
    assert sum(line.startswith("| OFA width 0.5 latency / width 1.0, paddle_infer_") for line in table) == 2
    assert (out / "results.png").stat().st_size > 10_000


def test_dygraph_kernels_backend_runs_the_operators_with_paddles_logits(monkeypatch):
    """paddle_dygraph_kernels runs a copy of the model on common/train_kernels.py's layers, paddle_dygraph the
    model as built: interleaved, each runs its own layers, with the same logits."""
    import benchmark
    from common import train_kernels as tk
    from common.bench_models import build_pair, make_batch

    _, model, cfg = build_pair(MODELS["bert-base-uncased"], quick=True)
    models = benchmark.with_kernels(None, model, ["paddle_dygraph", "paddle_dygraph_kernels"])
    assert models.paddle is model and models.kernels is not model
    assert not any(type(layer) in tk.UNSWAPS for layer in model.sublayers())
    assert benchmark.with_kernels(None, model, ["paddle_dygraph", "torch_fp32"]).kernels is None
    batch = make_batch(2, 16, cfg["vocab_size"])
    calls = []
    real = tk.attention
    monkeypatch.setattr(tk, "attention", lambda *a, **k: calls.append(1) or real(*a, **k))
    plain = benchmark.inference_step("paddle_dygraph", models, {}, batch)
    fast = benchmark.inference_step("paddle_dygraph_kernels", models, {}, batch)
    assert calls == []  # made, not called
    benchmark.interleaved([fast, plain], warmup=0, rounds=3)
    assert len(calls) == 3 * cfg["num_hidden_layers"] and fast.error is plain.error is None
    np.testing.assert_allclose(fast.value, plain.value, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(plain(), plain.value)
    assert len(calls) == 3 * cfg["num_hidden_layers"]


def test_benchmark_times_a_models_backends_interleaved(tmp_path, monkeypatch):
    """One interleaved measurement per batch size holding every inference backend, one for the training steps."""
    import benchmark

    seen, real = [], benchmark.interleaved
    monkeypatch.setattr(benchmark, "interleaved", lambda sides, *a: seen.append((len(sides), *a)) or real(sides, *a))
    out = tmp_path / "bench"
    results = benchmark.main(["--quick", "--models", "bert-base-uncased", "--backends",
                              "paddle_dygraph,paddle_dygraph_kernels,torch_fp32,paddle_train,torch_train",
                              "--output_dir", str(out)])
    assert seen == [(3, 1, 2, 0.0), (3, 1, 2, 0.0), (2, 1, 2, 0.0)]  # batch 1, batch 2, training
    assert results["settings"]["timing"] == "interleaved" and not [r for r in results["results"] if "error" in r]
    text = (out / "results.md").read_text()
    assert "median of 2 runs after 1 warm-up, the backends of a model and batch size interleaved" in text
    assert "median of 2 steps after 1 warm-up, the backends of a model and batch size interleaved" in text
    del results["settings"]["timing"]  # a results.json from before the timing was recorded
    assert "median of 2 runs after 1 warm-up, one backend after another." in benchmark.markdown(results)


def test_benchmark_times_the_cross_model_targets_models_in_the_same_rounds(tmp_path, monkeypatch):
    """--together's models (of --models) are built at once and each batch size's inference calls of all of them
    share one interleaved measurement; fine-tuning steps stay per model; a member that cannot be built gets error
    rows and the others go on; a model outside the group is timed alone."""
    import benchmark

    real_build, seen, real = benchmark.build_pair, [], benchmark.interleaved

    def build(model, quick):
        if model.name == "squeezebert-uncased":
            raise RuntimeError("no squeezebert")
        return real_build(model, quick)

    keys, real_rows = [], benchmark.measured_rows
    monkeypatch.setattr(benchmark, "build_pair", build)
    monkeypatch.setattr(benchmark, "interleaved", lambda sides, *a: seen.append(len(sides)) or real(sides, *a))
    monkeypatch.setattr(benchmark, "measured_rows", lambda kind, bs, seq, sides, *a: keys.append(list(sides))
                        or real_rows(kind, bs, seq, sides, *a))
    out = tmp_path / "bench"
    results = benchmark.main(["--quick", "--models", "tinybert-4l-312d,bert-base-uncased,squeezebert-uncased,"
                              "ofa-bert-base-w0.5", "--backends", "paddle_dygraph,torch_fp32,paddle_train,torch_train",
                              "--together", ",".join(benchmark.CROSS_MODEL), "--output_dir", str(out)])
    assert results["settings"]["together"] == ["bert-base-uncased", "squeezebert-uncased", "ofa-bert-base-w0.5"]
    assert seen == [2, 2, 2, 4, 4, 2, 2]  # tinybert: batch 1, 2, training; the group: batch 1, 2; two trainings
    assert keys[3] == [("bert-base-uncased", "paddle_dygraph"), ("ofa-bert-base-w0.5", "paddle_dygraph"),
                       ("bert-base-uncased", "torch_fp32"), ("ofa-bert-base-w0.5", "torch_fp32")]  # backend by backend
    assert list(results["models"]) == ["tinybert-4l-312d", "bert-base-uncased", "squeezebert-uncased",
                                       "ofa-bert-base-w0.5"]
    rows = {(r["model"], r["backend"], r["batch_size"]): r for r in results["results"]}
    group = ["bert-base-uncased", "ofa-bert-base-w0.5"]
    assert rows["bert-base-uncased", "torch_fp32", 2]["timed_with"] == group
    assert rows["ofa-bert-base-w0.5", "paddle_dygraph", 1]["timed_with"] == group
    assert rows["bert-base-uncased", "torch_train", 2]["timed_with"] == ["bert-base-uncased"]
    assert rows["tinybert-4l-312d", "paddle_dygraph", 1]["timed_with"] == ["tinybert-4l-312d"]
    assert rows["squeezebert-uncased", "paddle_dygraph", 1]["error"] == "RuntimeError: no squeezebert"
    assert [r for r in results["results"] if "error" in r and r["model"] != "squeezebert-uncased"] == []
    text = (out / "results.md").read_text()
    assert ("interleaved (one call of each per round, the order rotated every round); those of bert-base-uncased, "
            "squeezebert-uncased, ofa-bert-base-w0.5 in the same rounds.") in text
    assert "within a model and among bert-base-uncased, squeezebert-uncased, ofa-bert-base-w0.5 the median" in text
    assert benchmark.parse_args([])[0].together == []
    assert benchmark.parse_args(["--models", "bert-base-uncased,tinybert-4l-312d", "--together",
                                 ",".join(benchmark.CROSS_MODEL)])[0].together == []  # one of them: nothing to pair
    with pytest.raises(UserError, match="unknown model: gpt2"):
        benchmark.parse_args(["--together", "gpt2"])


def test_groups_put_the_together_models_at_the_first_ones_place():
    import benchmark

    s = benchmark.Settings(models=["a", "b", "c", "d", "e"], backends=[], batch_sizes=[1], seq_len=8,
                           train_batch_size=1, train_seq_len=8, warmup=0, runs=1, train_runs=1, threads=1,
                           quick=True, together=["b", "d"])
    assert benchmark.groups(s) == [["a"], ["b", "d"], ["c"], ["e"]]


def test_benchmark_rejects_unknown_names():
    import benchmark

    with pytest.raises(UserError, match="unknown backend"):
        benchmark.parse_args(["--backends", "tensorflow"])
    with pytest.raises(UserError, match="unknown model"):
        benchmark.parse_args(["--models", "gpt2"])
    with pytest.raises(UserError, match="--batch_sizes must be integers, not '1,x'"):
        benchmark.parse_args(["--batch_sizes", "1,x"])
    with pytest.raises(UserError, match="--batch_sizes must be >= 1, not '0,16'"):
        benchmark.parse_args(["--batch_sizes", "0,16"])
    with pytest.raises(UserError, match="--seq_len 513: conv-bert-small has 512 positions"):
        benchmark.parse_args(["--models", "conv-bert-small,squeezebert-uncased", "--seq_len", "513"])
    with pytest.raises(UserError, match="--train_seq_len 600: squeezebert-uncased has 512 positions"):
        benchmark.parse_args(["--models", "squeezebert-uncased", "--train_seq_len", "600"])
    assert benchmark.parse_args(["--batch_sizes", "32,1,16,1"])[0].batch_sizes == [1, 16, 32]


def test_benchmark_script_bad_input_exits_2(tmp_path):
    proc = run_script("benchmark.py", "--models", "gpt2,bert-base-uncased,x", "--output_dir", str(tmp_path / "out"))
    assert user_error(proc, not_written=tmp_path / "out") == f"unknown model: gpt2, x (known: {', '.join(MODELS)})"


# ---------------------------------------------------------------- speed work


@pytest.mark.parametrize("groups", [1, 4])
def test_pointwise_conv_is_conv1d(groups):
    """SqueezeBERT's matmul convolution computes nn.Conv1D's forward and gradients."""
    import paddle

    from squeezebert.modeling import PointwiseConv1D

    fast, ref = PointwiseConv1D(16, 32, groups), paddle.nn.Conv1D(16, 32, 1, groups=groups)
    ref.weight.set_value(fast.weight)
    ref.bias.set_value(fast.bias)
    grads = []
    for layer in (fast, ref):
        x = paddle.to_tensor(np.random.default_rng(0).normal(size=(3, 16, 7)).astype("float32"), stop_gradient=False)
        out = layer(x)
        (out.square() * paddle.arange(7, dtype="float32")).sum().backward()
        grads.append((out.numpy(), x.grad.numpy(), layer.weight.grad.numpy(), layer.bias.grad.numpy()))
    for a, b in zip(*grads):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("groups", [1, 4])
def test_pointwise_conv_static_form_is_conv1d(groups):
    """to_static traces the same batched matmul (no per-group split) and computes nn.Conv1D's forward."""
    import paddle

    from squeezebert.modeling import PointwiseConv1D

    fast, ref = PointwiseConv1D(16, 32, groups), paddle.nn.Conv1D(16, 32, 1, groups=groups)
    ref.weight.set_value(fast.weight)
    ref.bias.set_value(fast.bias)
    static = paddle.jit.to_static(fast, input_spec=[paddle.static.InputSpec([None, 16, None], "float32")], full_graph=True)
    x = paddle.to_tensor(np.random.default_rng(0).normal(size=(3, 16, 7)).astype("float32"))
    ops = {op.type for op in static.forward.concrete_program.main_program.global_block().ops}
    assert "matmul_v2" in ops and not {t for t in ops if "conv" in t or t == "split"}
    np.testing.assert_allclose(static(x).numpy(), ref(x).numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("groups", [
    dict(q_groups=2, k_groups=2, v_groups=2, post_attention_groups=1, intermediate_groups=2, output_groups=2),
    # groups holding parts of heads (8 groups, 4 heads), ungrouped and mismatched feed-forward groups
    dict(q_groups=8, k_groups=1, v_groups=4, post_attention_groups=2, intermediate_groups=4, output_groups=1),
])
def test_squeezebert_token_major_export_matches_hf(groups, tmp_path):
    """The exported encoder runs token-major (no channels-first layer norm transposes, no conv ops)
    and gives HF's outputs on a padded batch with both token types."""
    from common.convert import convert_checkpoint
    from common.inference import Predictor, PredictorOptions, export_static, op_types_of, optimized_op_counts
    from common.models import load_model_dir
    from squeezebert.spec import SPEC

    torch_dir = save_tiny(str(tmp_path / "torch"), "squeezebert", head="classification", embedding_size=32, **groups)
    randomize(torch_dir)  # trained-sized weights: on HF's init with drawn biases a dropped query bias passed
    convert_checkpoint(torch_dir, str(tmp_path / "paddle"), SPEC, quiet=True)
    prefix = export_static(load_model_dir(str(tmp_path / "paddle")), str(tmp_path / "static"))
    assert not {t for t in op_types_of(prefix) if "conv" in t}
    batch = padded_batch(3, 11, seed=3)
    torch_model = transformers.AutoModelForSequenceClassification.from_pretrained(torch_dir).eval()
    with torch.no_grad():
        ref = torch_model(**{k: torch.from_numpy(v) for k, v in batch.items()}).logits.numpy()
    for onednn in (True, False):
        got = Predictor(prefix, PredictorOptions(threads=2, onednn=onednn))(batch)[0]
        np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0)
    # paddle.inference runs the attention's query, key and value with the attention as one operator of this repo
    # where they share groups (the last layer, at [CLS] only, and other groups: the query, key and value as this
    # repo's grouped linear operator, the attention over all heads), the post-attention layer and the feed-forward
    # block (where its two convolutions have the same groups) as this repo's operators, weights folded first; a
    # feed-forward of other groups as one oneDNN fc per group; the pooler's and the classifier's fcs; no reshape
    # (paddle's copies)
    ops = optimized_op_counts(prefix, PredictorOptions(threads=2), str(tmp_path / "optimized"))
    config = transformers.AutoConfig.from_pretrained(torch_dir)
    layers = config.num_hidden_layers
    fused = groups["intermediate_groups"] == groups["output_groups"]
    assert ops["fc"] == (0 if fused else layers * (groups["intermediate_groups"] + groups["output_groups"])) + 2
    shared = groups["q_groups"] == groups["k_groups"] == groups["v_groups"]
    assert ops["ct_grouped_self_attention"] == (layers - 1 if shared else 0)
    assert ops["ct_grouped_linear"] == 3 * (1 if shared else layers) and ops["ct_attention"] == (1 if shared else layers)
    assert ops["ct_grouped_linear_add_norm"] == layers and ops["ct_grouped_ffn_add_norm"] == (layers if fused else 0)
    assert ops["fused_matmul"] + ops["matmul"] + ops["matmul_v2"] + ops["reshape2"] + ops["transpose2"] == 0
    # the portable export (onnxruntime, GPUs) keeps a grouped convolution as one batched matmul, and
    # the attention on paddle's matmuls
    portable = export_static(load_model_dir(str(tmp_path / "paddle")), str(tmp_path / "portable"), custom_ops=False)
    assert ("split" in op_types_of(prefix)) == (not fused) and "split" not in op_types_of(portable)
    assert "ct_attention" not in op_types_of(portable)
    got = Predictor(portable, PredictorOptions(threads=2))(batch)[0]
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0)


def test_squeezebert_builds_pointwise_convolutions_with_the_same_names():
    import paddlenlp.transformers as ppt

    import squeezebert.spec  # noqa: F401
    from squeezebert.modeling import PointwiseConv1D

    config = ppt.SqueezeBertConfig(hidden_size=32, embedding_size=32, num_attention_heads=4, intermediate_size=64,
                                   num_hidden_layers=1, q_groups=2, intermediate_groups=4)
    model = ppt.SqueezeBertModel(config)
    layer = model.encoder.layers[0]
    convs = [layer.attention.query, layer.attention.key, layer.attention.value, layer.post_attention.conv1d,
             layer.intermediate.conv1d, layer.output.conv1d]
    assert all(isinstance(c, PointwiseConv1D) for c in convs)
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert shapes["encoder.layers.0.attention.query.weight"] == [32, 16, 1]
    assert shapes["encoder.layers.0.intermediate.conv1d.weight"] == [64, 8, 1]


def test_export_leaves_the_dygraph_model_alone(classifiers, tmp_path):
    """to_static replaces sublayers' forward with converted code; export_static rolls it back."""
    from common.inference import export_static
    from common.models import load_model_dir

    model = load_model_dir(classifiers["squeezebert"])
    export_static(model, str(tmp_path))
    for layer in model.sublayers(include_self=True):
        assert "forward" not in vars(layer), type(layer).__name__  # the class's forward, not a bound copy


def test_predictor_run_keeps_the_callers_thread_count(classifiers, tmp_path):
    """paddle.inference leaves the calling thread's math library at 1 thread after a run; Predictor
    restores the count the caller had, so dygraph work after it keeps its threads."""
    import paddle

    from common.inference import Predictor, PredictorOptions, export_static, math_threads
    from common.models import load_model_dir

    prefix = export_static(load_model_dir(classifiers["bert"]), str(tmp_path))
    predictor = Predictor(prefix, PredictorOptions(threads=1))
    paddle.base.core.set_num_threads(2)
    predictor({n: np.ones((1, 4), dtype=np.int64) for n in ("input_ids", "token_type_ids", "attention_mask")})
    assert math_threads() == 2


def test_mixed_precision_refused_on_cpu(tmp_path):
    """paddle's AMP is a no-op on CPU: --bf16 would silently train in fp32."""
    from common.train_glue import GlueTrainingArguments

    with pytest.raises(UserError, match="GPU and XPU only"):
        GlueTrainingArguments(output_dir=str(tmp_path), bf16=True, device="cpu")


def test_benchmark_failures_become_rows(tmp_path, monkeypatch):
    """A model that cannot be built and a predictor that cannot be made are reported, the rest still runs."""
    import benchmark
    import common.inference

    real_build, real_predictor = benchmark.build_pair, common.inference.Predictor

    def build(model, quick):
        if model.name == "tinybert-4l-312d":
            raise RuntimeError("no such model\n  (the line a report leaves out)")
        return real_build(model, quick)

    def predictor(prefix, options=None):
        if options.precision == "bf16":
            raise RuntimeError("no bf16 here")
        return real_predictor(prefix, options)

    monkeypatch.setattr(benchmark, "build_pair", build)
    monkeypatch.setattr(common.inference, "Predictor", predictor)
    monkeypatch.setattr(benchmark, "onednn_bf16_missing", lambda: [])  # bf16 asked for on any CPU
    out = tmp_path / "bench"
    results = benchmark.main(["--quick", "--models", "bert-base-uncased,tinybert-4l-312d",
                              "--backends", "paddle_infer_fp32,paddle_infer_bf16,torch_train", "--output_dir", str(out)])
    errors = {(r["model"], r["backend"]) for r in results["results"] if "error" in r}
    assert errors == {("bert-base-uncased", "paddle_infer_bf16"), ("tinybert-4l-312d", "paddle_infer_fp32"),
                      ("tinybert-4l-312d", "paddle_infer_bf16"), ("tinybert-4l-312d", "torch_train")}
    table = (out / "results.md").read_text()
    # the exported rows' FLOPs: the second of the two tiny layers at [CLS] only
    assert "| bert-base-uncased | paddle_infer_bf16 | 0.000713 | failed | failed | - | - |" in table
    assert "tinybert-4l-312d: FAILED: RuntimeError: no such model" in table and "leaves out" not in table
    assert results["models"]["tinybert-4l-312d"]["error"] == "RuntimeError: no such model"


def _row(model, backend, bs, ms, kind="inference", **extra):
    return {"kind": kind, "model": model, "backend": backend, "batch_size": bs, "seq_len": 128,
            "ms_per_batch": ms, **extra}


def test_targets_are_computed_from_the_rows():
    """Each target's ratio of measured times, met or not, with the fastest paddle fp32 path counted."""
    from common.bench_report import targets

    rows = [
        _row("bert-base-uncased", "paddle_dygraph", 1, 90.0), _row("bert-base-uncased", "paddle_infer_fp32", 1, 40.0),
        _row("bert-base-uncased", "torch_fp32", 1, 100.0), _row("bert-base-uncased", "paddle_infer_bf16", 1, 30.0),
        _row("bert-base-uncased", "torch_bf16", 1, 25.0, max_abs_logit_diff_vs_fp32=0.01, pct_of_peak=84.0),
        _row("squeezebert-uncased", "paddle_infer_fp32", 1, 10.0), _row("squeezebert-uncased", "torch_fp32", 1, 90.0),
        _row("ofa-bert-base-w0.5", "paddle_infer_fp32", 1, 24.0),
        _row("bert-base-uncased", "paddle_train", 32, 500.0, kind="train"),
        _row("bert-base-uncased", "torch_train", 32, 400.0, kind="train"),
        _row("squeezebert-uncased", "paddle_train", 32, 500.0, kind="train"),
        _row("squeezebert-uncased", "paddle_train_kernels", 32, 300.0, kind="train"),
        _row("squeezebert-uncased", "torch_train", 32, 400.0, kind="train"),
        {"kind": "inference", "model": "ofa-bert-base-w0.5", "backend": "torch_fp32", "batch_size": 1, "error": "x"},
    ]
    results = {"settings": {"batch_sizes": [1], "train_batch_size": 32},
               "models": dict.fromkeys(["bert-base-uncased", "squeezebert-uncased", "ofa-bert-base-w0.5"], {}),
               "results": rows}
    lines = targets(results)
    assert "| paddle's best fp32 path / torch eager fp32 <= 0.8 | bert-base-uncased | @1: 0.40x | yes |  |" in lines
    assert "| paddle's best fp32 path / torch eager fp32 <= 0.8 | squeezebert-uncased | @1: 0.11x | yes |  |" in lines
    assert "| paddle's best fp32 path / torch eager fp32 <= 0.8 | ofa-bert-base-w0.5 | not measured | - |  |" in lines
    # what the target asks of paddle, from torch's share of the peak (the same FLOPs counted)
    assert ("| paddle inference bf16 / torch bf16 autocast <= 0.8 | bert-base-uncased | @1: 1.20x | no | "
            "torch at 84 % of peak: needs paddle at 105 % |") in lines
    assert ("| SqueezeBERT speedup over BERT-base, paddle_infer_fp32 >= 2.5 | squeezebert-uncased | @1: 4.00x | yes |  |"
            in lines)
    assert "| bf16 speedup over fp32, paddle_infer >= 3.0 | bert-base-uncased | @1: 1.33x | no |  |" in lines
    assert "| bf16 speedup over fp32, torch >= 3.0 | bert-base-uncased | @1: 4.00x | yes |  |" in lines
    assert "| paddle fine-tuning step / torch's <= 1 | bert-base-uncased | @32: 1.25x | no |  |" in lines
    # the faster of paddle's two training paths counts
    assert "| paddle fine-tuning step / torch's <= 1 | squeezebert-uncased | @32: 0.75x | yes |  |" in lines
    assert ("| OFA width 0.5 latency / width 1.0, paddle_infer_fp32 <= 0.55 | ofa-bert-base-w0.5 | @1: 0.60x | no |  |"
            in lines)
    assert "| bert-base-uncased | - | 0.01 |" in lines


def _full_row(model, backend, bs, ms, kind="inference"):
    seq_per_s = bs * 1000 / ms
    return _row(model, backend, bs, ms, kind, seq_per_s=seq_per_s, gflop_per_s=seq_per_s, pct_of_peak=1.0)


def test_targets_within_a_model_pair_the_rounds_of_an_interleaved_run():
    """Rows timed side by side: a model's ratios are the median of the rounds' ratios (a slow round cancels);
    two models' rows, timed minutes apart, keep the ratio of their medians; without "timing": the medians."""
    from common.bench_report import targets

    rows = [_row("bert-base-uncased", "paddle_infer_fp32", 1, 90.0, runs_ms=[90.0, 60.0, 120.0]),
            _row("bert-base-uncased", "torch_fp32", 1, 100.0, runs_ms=[100.0, 80.0, 160.0]),
            _row("squeezebert-uncased", "paddle_infer_fp32", 1, 30.0, runs_ms=[45.0, 30.0, 24.0])]
    results = {"settings": {"batch_sizes": [1], "train_batch_size": 32, "timing": "interleaved"},
               "models": dict.fromkeys(["bert-base-uncased", "squeezebert-uncased"], {}), "results": rows}
    fp32 = "| paddle's best fp32 path / torch eager fp32 <= 0.8 | bert-base-uncased | "
    squeezebert = "| SqueezeBERT speedup over BERT-base, paddle_infer_fp32 >= 2.5 | squeezebert-uncased | @1: 3.00x | yes |"
    lines = targets(results)
    assert lines[0].startswith("| target | model | measured (ratio of ms per batch; within a model the median of the "
                               "rounds' ratios, @batch size) |")
    assert fp32 + "@1: 0.75x | yes |  |" in lines  # rounds 0.9, 0.75, 0.75 (medians: 0.90)
    assert any(line.startswith(squeezebert) for line in lines)  # 90 / 30 (rounds: 2.0, 2.0, 5.0)
    del results["settings"]["timing"]
    lines = targets(results)
    assert fp32 + "@1: 0.90x | no |  |" in lines and any(line.startswith(squeezebert) for line in lines)


def test_targets_pair_the_rounds_of_rows_timed_together():
    """Rows of two models timed in the same rounds (the same ``timed_with``) give the median of the rounds'
    ratios; rows timed apart keep the ratio of their medians."""
    from common.bench_report import targets

    together = ["bert-base-uncased", "squeezebert-uncased"]
    rows = [_row("bert-base-uncased", "paddle_infer_fp32", 1, 90.0, runs_ms=[90.0, 60.0, 120.0]),
            _row("squeezebert-uncased", "paddle_infer_fp32", 1, 30.0, runs_ms=[45.0, 30.0, 24.0])]
    results = {"settings": {"batch_sizes": [1], "train_batch_size": 32, "timing": "interleaved",
                            "together": together},
               "models": dict.fromkeys(together, {}), "results": [r | {"timed_with": together} for r in rows]}
    squeezebert = "| SqueezeBERT speedup over BERT-base, paddle_infer_fp32 >= 2.5 | squeezebert-uncased | @1: "
    lines = targets(results)
    assert "among bert-base-uncased, squeezebert-uncased the median of the rounds' ratios" in lines[0]
    assert squeezebert + "2.00x | no |  |" in lines  # rounds 2.0, 2.0, 5.0 (medians: 3.00)
    results["results"] = [r | {"timed_with": [r["model"]]} for r in rows]
    assert squeezebert + "3.00x | yes |  |" in targets(results)


def test_report_only_rewrites_the_summary_tables_from_results_json(tmp_path, capsys):
    """--report_only measures nothing: results.md gets the model x backend summary (ms at the smallest
    batch / seq/s at the largest) and the fine-tuning table with the kernels' ratios, from results.json."""
    import benchmark

    models = ["tinybert-4l-312d", "bert-base-uncased"]
    results = {
        "settings": {"models": models, "batch_sizes": [1, 32], "seq_len": 128, "train_batch_size": 32,
                     "warmup": 1, "runs": 3, "train_runs": 2, "threads": 2},
        "machine": {"cpu": "test CPU", "threads": 2, "ghz": 3.5, "peak_fp32_gflops": 224.0,
                    "peak_bf16_gflops": 448.0, "assumptions": ["given"]},
        "versions": {"code": "abc1234", "paddle": "2.6.2"},
        "models": {m: {"gflops_per_seq": g, "parameters": 1e6, "parity_max_abs_logit_diff": 1e-6,
                       "max_abs_logit": 1.0, "note": ""} for m, g in (("bert-base-uncased", 22.3),
                                                                     ("tinybert-4l-312d", 1.25))},
        "results": [
            _full_row("tinybert-4l-312d", "paddle_infer_fp32", 1, 9.6), _full_row("tinybert-4l-312d", "paddle_infer_fp32", 32, 250.0),
            _full_row("tinybert-4l-312d", "torch_fp32", 1, 15.2), _full_row("tinybert-4l-312d", "torch_fp32", 32, 297.0),
            _full_row("bert-base-uncased", "paddle_infer_fp32", 1, 120.3),
            {"kind": "inference", "model": "bert-base-uncased", "backend": "paddle_infer_fp32", "batch_size": 32,
             "seq_len": 128, "error": "x"},
            _full_row("bert-base-uncased", "torch_fp32", 1, 187.3),
            _full_row("tinybert-4l-312d", "paddle_train", 32, 2218.0, "train"),
            _full_row("tinybert-4l-312d", "paddle_train_kernels", 32, 867.0, "train"),
            _full_row("tinybert-4l-312d", "torch_train", 32, 1143.0, "train"),
            _full_row("bert-base-uncased", "paddle_train", 32, 24365.0, "train"),
            {"kind": "train", "model": "bert-base-uncased", "backend": "paddle_train_kernels", "batch_size": 32,
             "seq_len": 128, "error": "x"},
            _full_row("bert-base-uncased", "torch_train", 32, 14450.0, "train"),
        ],
    }
    out = tmp_path / "bench"
    out.mkdir()
    (out / "results.json").write_text(json.dumps(results))
    before = (out / "results.json").read_bytes()
    benchmark.main(["--report_only", "--output_dir", str(out)])
    assert (out / "results.json").read_bytes() == before
    table = (out / "results.md").read_text()
    summary = table[table.index("## Summary"):table.index("## Targets")].strip().splitlines()
    assert summary == [
        "## Summary", "",
        "Inference, ms per batch at batch 1 / seq/s at batch 32:", "",
        "| model | GFLOP/seq | paddle_infer_fp32 | torch_fp32 |", "|---|---:|---:|---:|",
        "| tinybert-4l-312d | 1.25 | 10 / 128.0 | 15 / 107.7 |",
        "| bert-base-uncased | 22.3 | failed | - |", "",
        "Fine-tuning step (forward, cross-entropy, backward, AdamW; batch 32 x 128, train mode), ms per step:", "",
        "| model | paddle_train | paddle_train_kernels | torch_train | paddle_train_kernels / paddle_train "
        "| paddle_train_kernels / torch_train |", "|---|---:|---:|---:|---:|---:|",
        "| tinybert-4l-312d | 2218 | 867 | 1143 | 0.39x | 0.76x |",
        "| bert-base-uncased | 24365 | failed | 14450 | - | - |",
    ]
    assert (out / "results.png").stat().st_size > 10_000
    with pytest.raises(SystemExit) as exit_:
        benchmark.main(["--report_only", "--output_dir", str(tmp_path / "none")])
    assert exit_.value.code == 2 and not (tmp_path / "none").exists()
    assert capsys.readouterr().err == f"error: {tmp_path / 'none' / 'results.json'}: file not found\n"


def test_interrupted_benchmark_keeps_finished_models(tmp_path, monkeypatch):
    """results.json is rewritten after every model: a run stopped in the second model keeps the first."""
    import benchmark

    real_build = benchmark.build_pair

    def build(model, quick):
        if model.name == "squeezebert-uncased":
            raise KeyboardInterrupt
        return real_build(model, quick)

    monkeypatch.setattr(benchmark, "build_pair", build)
    out = tmp_path / "bench"
    with pytest.raises(KeyboardInterrupt):
        benchmark.main(["--quick", "--models", "tinybert-4l-312d,squeezebert-uncased", "--backends",
                        "paddle_infer_fp32,torch_fp32", "--output_dir", str(out)])
    results = json.loads((out / "results.json").read_text())
    assert list(results["models"]) == ["tinybert-4l-312d"]
    assert {(r["model"], r["backend"]) for r in results["results"]} == {
        ("tinybert-4l-312d", "paddle_infer_fp32"), ("tinybert-4l-312d", "torch_fp32")}
    assert "| tinybert-4l-312d | paddle_infer_fp32 |" in (out / "results.md").read_text()

    # --resume measures only the model left: the first one's rows are kept as they were.
    monkeypatch.setattr(benchmark, "build_pair", real_build)
    args = ["--quick", "--models", "tinybert-4l-312d,squeezebert-uncased", "--backends", "paddle_infer_fp32,torch_fp32",
            "--output_dir", str(out)]
    with pytest.raises(UserError, match=r"results.json: measured with other settings; run without --resume"):
        benchmark.main.__wrapped__([*args, "--resume", "--full_last_layer"])
    again = benchmark.main([*args, "--resume"])
    assert list(again["models"]) == ["tinybert-4l-312d", "squeezebert-uncased"] and again["resumed"] == 1
    assert [r for r in again["results"] if r["model"] == "tinybert-4l-312d"] == results["results"]
    assert {(r["model"], r["backend"]) for r in again["results"] if r["model"] == "squeezebert-uncased"} == {
        ("squeezebert-uncased", "paddle_infer_fp32"), ("squeezebert-uncased", "torch_fp32")}
    assert again["wall_s"] > results["wall_s"]
    assert "Measured by 2 runs of the same settings (--resume)." in (out / "results.md").read_text()


def test_training_only_run_writes_its_table_and_plot(tmp_path):
    """No inference backend: the fine-tuning table is written and the (empty) plot does not fail."""
    import benchmark

    out = tmp_path / "bench"
    benchmark.main(["--quick", "--models", "squeezebert-uncased", "--backends", "paddle_train_kernels,torch_train",
                    "--output_dir", str(out)])
    table = (out / "results.md").read_text()
    assert "| squeezebert-uncased | paddle_train_kernels | 2 x 16 |" in table
    assert "| squeezebert-uncased | torch_train | 2 x 16 |" in table
    assert (out / "results.png").stat().st_size > 0


def test_paddle_bf16_needs_avx512(monkeypatch):
    """On a CPU without AVX-512 paddle.inference's bf16 switch silently runs fp32: the benchmark leaves
    it out by default and refuses it when asked; the predictor refuses it too."""
    import benchmark
    import common.inference
    from common.inference import PredictorOptions

    monkeypatch.setattr(benchmark, "onednn_bf16_missing", lambda: ["avx512f", "avx512bw"])
    settings, _ = benchmark.parse_args([])
    assert "paddle_infer_bf16" not in settings.backends and "torch_bf16" in settings.backends
    with pytest.raises(UserError, match=r"paddle_infer_bf16: paddle's oneDNN bfloat16 kernels need AVX-512; "
                                        r"this CPU lacks avx512f, avx512bw \(paddle would run fp32\)"):
        benchmark.parse_args(["--backends", "paddle_infer_bf16"])
    monkeypatch.setattr(common.inference, "onednn_bf16_missing", lambda: ["avx512bw"])
    with pytest.raises(UserError, match="need AVX-512; this CPU lacks avx512bw"):
        PredictorOptions(precision="bf16").check()
    monkeypatch.setattr(common.inference, "onednn_bf16_missing", lambda: [])
    PredictorOptions(precision="bf16").check()


def test_grouped_linears_of_a_config_built_convbert_are_initialised():
    """HF's ConvBERT GroupedLinearLayer starts as torch.empty and _init_weights skips it: build_pair and the
    tests' tiny checkpoints initialise it like a Linear (the benchmark's torch logits were NaN without it)."""
    import torch

    from common.bench_models import hf_config, init_grouped_linears

    config = hf_config(MODELS["conv-bert-medium-small"], quick=False)
    config.num_hidden_layers = 2
    torch.manual_seed(0)
    model = transformers.AutoModel.from_config(config)
    assert init_grouped_linears(model) == 4  # two per layer: the FFN's both linears
    for layer in (m for m in model.modules() if type(m).__name__ == "GroupedLinearLayer"):
        weight = layer.weight.detach().numpy()
        assert weight.shape == (2, 192, 768) or weight.shape == (2, 768, 192)
        assert np.isfinite(weight).all() and abs(weight.std() - config.initializer_range) < 1e-3
        assert not layer.bias.detach().numpy().any()
