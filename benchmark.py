"""Speed of the compact BERT models: paddle (dygraph, paddle.inference fp32 / bf16, the export in
onnxruntime through paddle2onnx) against torch (eager fp32, bf16 autocast), inference and one
fine-tuning step (paddle's dygraph with its own kernels and with ``common/train_kernels.py``'s),
with FLOP rates.

Models are full-size official configs with random weights, the same in both frameworks
(``common/bench_models.py``; the largest logit difference is recorded). Inputs are full-length
random sequences; inference runs in eval mode without gradients, a training step in train mode
(dropout) with AdamW. Per model and batch size, the backends are timed side by side: ``--warmup``
untimed calls of each, then ``--runs`` rounds of one call of each, the order rotated every round
(``common/interleave.py``: a slow phase of the machine falls on every backend alike); likewise the
fine-tuning steps. With ``--together`` (e.g. BERT-base, SqueezeBERT, OFA width 0.5) several models are held
at once and their inference calls share the rounds, so the ratios between them are paired too. The
``*_kernels`` backends run a copy of the paddle model on those layers. Times are the median, with the thread
count fixed for both frameworks and glibc malloc keeping freed memory (``common/malloc.py``).
Writes ``results.json``, ``results.md`` and ``results.png`` under ``--output_dir``; exit code 1
when any measurement failed (the others are still written).
"""
from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Callable, NamedTuple

import common  # noqa: F401  (zlib before paddle)
import numpy as np
from common.bench_models import MODELS, Model, build_pair, check_names, check_seq_len, hf_config, make_batch, parse_batch_sizes
from common.bench_report import BF16_BACKENDS, EXPORTED_BACKENDS, FP32_OF, markdown, plot
from common.errors import UserError, cli, error_line
from common.first_token import first_token_layer
from common.flops import TRAINING_STEP_FACTOR, forward_flops
from common.fsutil import read_json, write_json, write_text
from common.hardware import cpu_info, onednn_bf16_missing
from common.interleave import Side, failed, interleaved, made
from common.malloc import retain_freed_memory
from common.provenance import code_version

if TYPE_CHECKING:
    import paddle
    import torch

# paddle_dygraph_kernels: dygraph eval with common/train_kernels.py's layers (run_glue's evaluation on CPU).
# paddle_ort_fp32: the portable export (paddle's operators only) converted by paddle2onnx, run by onnxruntime.
INFERENCE_BACKENDS = ("paddle_dygraph", "paddle_dygraph_kernels", "paddle_infer_fp32", "paddle_ort_fp32",
                      "paddle_infer_bf16", "torch_fp32", "torch_bf16")
# paddle_train: paddle's own kernels; paddle_train_kernels: common/train_kernels.py's (what run_glue uses on CPU).
TRAIN_BACKENDS = ("paddle_train", "paddle_train_kernels", "torch_train")
BACKENDS = INFERENCE_BACKENDS + TRAIN_BACKENDS
# For the up-front time estimate only: GFLOP/s per thread each backend was seen to reach on BERT-base and
# SqueezeBERT (2 Sapphire Rapids cores, batch 16, paddle.inference bf16 on AMX; paddle_train_kernels:
# 2 AMD EPYC cores). Slower machines take longer.
ESTIMATE_GFLOPS_PER_THREAD = {"paddle_dygraph": 25, "paddle_dygraph_kernels": 35, "paddle_infer_fp32": 70,
                              "paddle_ort_fp32": 70, "paddle_infer_bf16": 150,
                              "torch_fp32": 75, "torch_bf16": 150, "paddle_train": 15, "paddle_train_kernels": 80,
                              "torch_train": 55}
# Pause before each measurement: an OpenMP runtime left spinning by the other framework (Intel OpenMP
# spins 200 ms after a parallel region) would take cores from the first runs.
SETTLE_S = 0.3
# The models of the cross-model targets with a limit (SqueezeBERT and OFA width 0.5 against BERT-base), for
# --together: held at once, a full-size run peaked at 17.3 GB; with the widths 0.833 and 0.667 too it outgrew
# 24 GB at batch 32 (the kernel killed it).
CROSS_MODEL = ("bert-base-uncased", "squeezebert-uncased", "ofa-bert-base-w0.5")


@dataclass
class Settings:
    models: list[str]
    backends: list[str]
    batch_sizes: list[int]
    seq_len: int
    train_batch_size: int
    train_seq_len: int
    warmup: int
    runs: int
    train_runs: int
    threads: int
    quick: bool
    full_last_layer: bool = False
    train_warmup: int = 1
    # how a model's rows were timed: "interleaved" (common/interleave.py); results.json written before: one
    # backend after another (no such key)
    timing: str = "interleaved"
    # models whose inference calls shared the rounds (none: each model's own; results.json written before: none)
    together: list[str] = field(default_factory=list)


class Models(NamedTuple):
    """One benchmark model in both frameworks; ``kernels``: a copy of ``paddle`` on ``common/train_kernels.py``'s
    layers for the ``*_kernels`` backends (None where none runs): a model of their own, so that the interleaved
    calls never switch a model's layers, and each side's steps update its own parameters."""

    torch: object
    paddle: object
    kernels: object = None


def with_kernels(torch_model: torch.nn.Module, paddle_model: paddle.nn.Layer, backends: list[str]) -> Models:
    """:class:`Models`, with the kernel copy where ``backends`` hold a ``*_kernels`` backend."""
    if not any(b.endswith("_kernels") for b in backends):
        return Models(torch_model, paddle_model)
    from common.train_kernels import use_train_kernels

    twin = copy.deepcopy(paddle_model)
    use_train_kernels(twin)
    return Models(torch_model, paddle_model, twin)


def _paddle(models: Models, backend: str):
    return models.kernels if backend.endswith("_kernels") else models.paddle


def inference_step(backend: str, models: Models, predictors: dict, batch: dict) -> Side:
    """One forward pass of ``batch`` on ``backend``, returning the logits (computation finished); its
    ``prepare`` puts the model in eval mode."""
    if backend.startswith("torch"):
        import torch

        inputs = {k: torch.from_numpy(v) for k, v in batch.items()}
        bf16 = backend == "torch_bf16"

        def run():
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                return models.torch(**inputs).logits.float().numpy()
        return Side(run, models.torch.eval)
    if backend in ("paddle_dygraph", "paddle_dygraph_kernels"):
        import paddle

        model = _paddle(models, backend)
        inputs = {k: paddle.to_tensor(v) for k, v in batch.items()}

        def run():
            with paddle.no_grad():
                return model(**inputs).numpy()
        return Side(run, model.eval)
    predictor = predictors[backend]
    if isinstance(predictor, Exception):  # export or predictor creation failed: a row with the error
        return failed(predictor)
    return Side(lambda: predictor(batch)[0])


def train_step(backend: str, models: Models, batch: dict) -> Side:
    """One fine-tuning step (forward, cross-entropy, backward, AdamW) on ``batch``, returning the loss; its
    ``prepare`` puts the model in train mode."""
    labels = np.arange(len(batch["input_ids"])) % 2
    if backend == "torch_train":
        import torch

        inputs = {k: torch.from_numpy(v) for k, v in batch.items()}
        target = torch.from_numpy(labels)
        opt = torch.optim.AdamW(models.torch.parameters(), lr=1e-5)

        def step():
            loss = torch.nn.functional.cross_entropy(models.torch(**inputs).logits, target)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            return loss.item()
        return Side(step, models.torch.train)
    import paddle
    import paddle.nn.functional as F

    model = _paddle(models, backend)
    inputs = {k: paddle.to_tensor(v) for k, v in batch.items()}
    target = paddle.to_tensor(labels)
    opt = paddle.optimizer.AdamW(learning_rate=1e-5, parameters=model.parameters())

    def step():
        loss = F.cross_entropy(model(**inputs), target)
        loss.backward()
        opt.step()
        opt.clear_grad()
        return float(loss)
    return Side(step, model.train)


def measured_rows(kind: str, bs: int, seq: int, sides: dict[tuple[str, str], Side], s: Settings,
                  flops: Callable[[str, str], int], peak: Callable[[str], float]) -> list[dict]:
    """Time ``sides`` ((model, backend) -> side) interleaved (``common/interleave.py``); a row per side, a failure
    a row with ``error``; ``timed_with``: the models whose calls shared the rounds. ``flops`` / ``peak``: a
    model and backend's FLOPs per sequence, a backend's peak GFLOP/s."""
    warmup, runs = (s.train_warmup, s.train_runs) if kind == "train" else (s.warmup, s.runs)
    interleaved(list(sides.values()), warmup, runs, 0.0 if s.quick else SETTLE_S)
    timed_with = list(dict.fromkeys(model for model, _ in sides))
    rows = []
    for (model, backend), side in sides.items():
        row = {"kind": kind, "model": model, "backend": backend, "batch_size": bs, "seq_len": seq,
               "timed_with": timed_with}
        if side.error is not None:
            rows.append(row | {"error": error_line(side.error)})
            continue
        median = statistics.median(side.times)
        rate = flops(model, backend) * bs / median / 1e9
        rows.append(row | {"ms_per_batch": 1e3 * median, "seq_per_s": bs / median, "gflop_per_s": rate,
                           "pct_of_peak": 100 * rate / peak(backend), "runs_ms": [1e3 * t for t in side.times]})
    return rows


def describe(row: dict) -> str:
    head = f"  {row['backend']:<22} {row['batch_size']:>3} x {row['seq_len']}"
    if "error" in row:
        return f"{head}: FAILED {row['error']}"
    delta = f", max |logit - fp32| {row['max_abs_logit_diff_vs_fp32']:.2g}" if "max_abs_logit_diff_vs_fp32" in row else ""
    return (f"{head}: {row['ms_per_batch']:9.1f} ms {row['seq_per_s']:8.1f} seq/s "
            f"{row['gflop_per_s']:7.1f} GFLOP/s {row['pct_of_peak']:5.1f}% of peak{delta}")


def make_predictors(paddle_model: paddle.nn.Layer, backends: list[str], threads: int, tmp: str,
                    first_token: bool = True) -> dict:
    """``paddle.inference`` and onnxruntime predictors by backend (the exception instead where one
    cannot be made); ``first_token``: as :func:`common.inference.export_static`'s."""
    from common.inference import Predictor, PredictorOptions, custom_ops, export_static, op_types_of
    from common.onnx_runtime import ONNX_FILE, OnnxPredictor, convert_to_onnx

    predictors, prefix = {}, None
    for backend in backends:
        try:
            prefix = prefix or export_static(paddle_model, tmp, first_token=first_token)
            if backend == "paddle_ort_fp32":  # a second, portable export only where the first holds our operators
                portable = export_static(paddle_model, os.path.join(tmp, "portable"), False, first_token) \
                    if custom_ops(op_types_of(prefix)) else prefix
                predictors[backend] = OnnxPredictor(convert_to_onnx(portable, os.path.join(tmp, ONNX_FILE)), threads)
            else:
                predictors[backend] = Predictor(prefix, PredictorOptions(threads=threads,
                                                                         precision=backend.rsplit("_", 1)[1]))
        except Exception as exc:  # noqa: BLE001  (becomes the rows' error)
            predictors[backend] = exc
    return predictors


def failed_model(model: Model, s: Settings, exc: Exception) -> tuple[dict, list[dict]]:
    """The summary and an error row per backend and batch size of a model that could not be built."""
    error = error_line(exc)
    rows = [{"kind": "inference", "model": model.name, "backend": b, "batch_size": bs, "seq_len": s.seq_len,
             "error": error} for b in s.backends if b in INFERENCE_BACKENDS for bs in s.batch_sizes]
    rows += [{"kind": "train", "model": model.name, "backend": b, "batch_size": s.train_batch_size,
              "seq_len": s.train_seq_len, "error": error} for b in s.backends if b in TRAIN_BACKENDS]
    return {"model_type": model.model_type, "note": model.note, "error": error}, rows


@dataclass
class Prepared:
    """A model built in both frameworks and exported, ready to be timed (:func:`prepare`)."""

    model: Model
    summary: dict
    models: Models
    vocab: int
    flops: int
    exported_flops: int
    train_flops: int
    predictors: dict


def prepare(model: Model, s: Settings, tmp: str) -> Prepared:
    """Build ``model`` in both frameworks (the logits compared), export it under ``tmp``, make its predictors."""
    start = time.perf_counter()
    torch_model, paddle_model, cfg = build_pair(model, s.quick)
    models = with_kernels(torch_model, paddle_model, s.backends)
    vocab = cfg["vocab_size"]
    check = make_batch(2, min(16, s.seq_len), vocab, seed=1)
    ref = inference_step("torch_fp32", models, {}, check)()
    got = inference_step("paddle_dygraph", models, {}, check)()
    flops = forward_flops(cfg, s.seq_len)
    train_flops = TRAINING_STEP_FACTOR * forward_flops(cfg, s.train_seq_len)
    first_token = not s.full_last_layer and first_token_layer(paddle_model) is not None
    exported_flops = forward_flops(cfg, s.seq_len, first_token)
    summary = {
        "model_type": model.model_type, "note": model.note, "config": cfg, "gflops_per_seq": flops / 1e9,
        "first_token_export": first_token, "exported_gflops_per_seq": exported_flops / 1e9,
        "train_gflops_per_seq": train_flops / 1e9,
        "parameters": int(sum(p.numel() for p in torch_model.parameters())),
        "parity_max_abs_logit_diff": float(np.abs(ref - got).max()), "max_abs_logit": float(np.abs(ref).max()),
    }
    exported = [b for b in s.backends if b in EXPORTED_BACKENDS]
    predictors = make_predictors(paddle_model, exported, s.threads, tmp, not s.full_last_layer)
    summary["setup_s"] = time.perf_counter() - start
    at_cls = f" ({exported_flops / 1e9:.3g} exported, last layer at [CLS])" if first_token else ""
    print(f"{model.name}: {summary['parameters'] / 1e6:.3g}M parameters, {flops / 1e9:.3g} GFLOP/seq{at_cls}, "
          f"torch-paddle max |logit diff| {summary['parity_max_abs_logit_diff']:.1e}, "
          f"setup {summary['setup_s']:.0f} s", flush=True)
    return Prepared(model, summary, models, vocab, flops, exported_flops, train_flops, predictors)


def _peak(machine: dict) -> Callable[[str], float]:
    return lambda backend: machine["peak_bf16_gflops" if backend in BF16_BACKENDS else "peak_fp32_gflops"]


def inference_rows(ready: list[Prepared], s: Settings, machine: dict) -> list[dict]:
    """Per batch size, every inference backend of every model in ``ready`` timed in the same rounds, backend by
    backend (a backend's calls on the models next to each other, as the cross-model targets compare them); each
    bf16 row with its logits' difference from the same model's fp32 side."""
    by_name = {p.model.name: p for p in ready}
    backends = [b for b in INFERENCE_BACKENDS if b in s.backends]
    rows = []
    for bs in s.batch_sizes:
        batches = {p.model.name: make_batch(bs, s.seq_len, p.vocab) for p in ready}
        sides = {(p.model.name, b): made(lambda: inference_step(b, p.models, p.predictors, batches[p.model.name]))
                 for b in backends for p in ready}

        def flops(name: str, backend: str) -> int:
            p = by_name[name]
            return p.exported_flops if backend in EXPORTED_BACKENDS else p.flops

        batch_rows = measured_rows("inference", bs, s.seq_len, sides, s, flops, _peak(machine))
        for row in batch_rows:
            fp32 = sides.get((row["model"], FP32_OF.get(row["backend"])))
            if "error" not in row and fp32 is not None and fp32.error is None:
                logits = sides[row["model"], row["backend"]].value
                row["max_abs_logit_diff_vs_fp32"] = float(np.abs(logits - fp32.value).max())
        batch_rows.sort(key=lambda r: list(by_name).index(r["model"]))
        for row in batch_rows:
            print((f"  {row['model']}" if len(ready) > 1 else "") + describe(row), flush=True)
        rows += batch_rows
    return rows


def train_rows(p: Prepared, s: Settings, machine: dict) -> list[dict]:
    """``p``'s fine-tuning steps, its backends timed in the same rounds."""
    backends = [b for b in s.backends if b in TRAIN_BACKENDS]
    if not backends:
        return []
    batch = make_batch(s.train_batch_size, s.train_seq_len, p.vocab)
    sides = {(p.model.name, b): made(lambda: train_step(b, p.models, batch)) for b in backends}
    rows = measured_rows("train", s.train_batch_size, s.train_seq_len, sides, s, lambda name, b: p.train_flops,
                         lambda b: machine["peak_fp32_gflops"])
    for row in rows:
        print(describe(row), flush=True)
    return rows


def bench_group(group: list[Model], s: Settings, machine: dict) -> dict[str, tuple[dict, list[dict]]]:
    """Model name -> (summary, result rows) for ``group``: built and exported together, their inference calls
    timed in the same rounds, then each model's fine-tuning steps; a model that cannot be built gets error rows
    (:func:`failed_model`) and the others go on."""
    out, ready = {}, []
    with tempfile.TemporaryDirectory() as tmp:
        for model in group:
            try:
                ready.append(prepare(model, s, os.path.join(tmp, model.name)))
            except Exception as exc:  # noqa: BLE001  (reported; the other models still run)
                print(f"{model.name}: FAILED to build: {type(exc).__name__}: {exc}", flush=True)
                out[model.name] = failed_model(model, s, exc)
        rows = inference_rows(ready, s, machine)
        for p in ready:
            p.predictors.clear()
    while ready:  # each model released after its steps
        p = ready.pop(0)
        out[p.model.name] = p.summary, [r for r in rows if r["model"] == p.model.name] + train_rows(p, s, machine)
        del p
        gc.collect()
    return {m.name: out[m.name] for m in group}


def groups(s: Settings) -> list[list[str]]:
    """``s.models`` in order as the groups :func:`bench_group` times: ``s.together`` as one, at its first
    model's place; every other model alone."""
    out = []
    for name in s.models:
        if name not in s.together:
            out.append([name])
        elif name == s.together[0]:
            out.append(list(s.together))
    return out


def estimate_seconds(s: Settings) -> float:
    """Rough wall time: each backend's FLOPs at :data:`ESTIMATE_GFLOPS_PER_THREAD`, plus model setup."""
    total = 0.0
    for name in s.models:
        cfg = hf_config(MODELS[name], s.quick).to_dict()
        for backend in s.backends:
            if backend in TRAIN_BACKENDS:
                steps = s.train_warmup + s.train_runs
                flops = steps * s.train_batch_size * TRAINING_STEP_FACTOR * forward_flops(cfg, s.train_seq_len)
                pauses = s.train_runs
            else:
                flops = (s.warmup + s.runs) * sum(s.batch_sizes) * forward_flops(cfg, s.seq_len)
                pauses = len(s.batch_sizes) * s.runs
            total += flops / (s.threads * ESTIMATE_GFLOPS_PER_THREAD[backend] * 1e9) + pauses * SETTLE_S * (not s.quick)
        total += 1 if s.quick else 15  # build, convert, export, predictors
        if name == "mobilebert-uncased" and "paddle_infer_bf16" in s.backends and not s.quick:
            total += 150  # paddle's bf16 IR passes on its 2,168-op graph (2.5 min measured)
    return total


def _names(value: str, known, what: str) -> list[str]:
    return check_names([v for v in value.split(",") if v], known, what)


def parse_args(argv: list[str] | None) -> tuple[Settings, argparse.Namespace]:
    cores = len(os.sched_getaffinity(0))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated (default all: {','.join(MODELS)})")
    missing = onednn_bf16_missing()
    defaults = [b for b in BACKENDS if not (missing and b == "paddle_infer_bf16")]
    parser.add_argument("--backends", default=",".join(defaults),
                        help=f"comma-separated (default all: {','.join(BACKENDS)}; paddle_infer_bf16 only on CPUs "
                             "with AVX-512, which paddle's oneDNN bfloat16 kernels need)")
    parser.add_argument("--batch_sizes", default="1,16,32", help="inference batch sizes (default 1,16,32)")
    parser.add_argument("--seq_len", type=int, default=128, help="sequence length (default 128; e.g. 64 or 256)")
    parser.add_argument("--train_batch_size", type=int, default=32, help="fine-tuning step batch size (default 32)")
    parser.add_argument("--train_seq_len", type=int, help="fine-tuning step sequence length (default --seq_len)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed inference runs first (default 2)")
    parser.add_argument("--runs", type=int, default=5, help="timed inference runs; the median is reported (default 5)")
    parser.add_argument("--train_warmup", type=int, default=2,
                        help="untimed training steps first (default 2: MobileBERT's second step with the kernels "
                             "took 1.3x its fourth)")
    parser.add_argument("--train_runs", type=int, default=3, help="timed training steps (default 3)")
    parser.add_argument("--threads", type=int, default=cores, help=f"threads of both frameworks (default all cores: {cores})")
    parser.add_argument("--peak_ghz", type=float,
                        help="clock for the peak FLOP rate (default: cpufreq's maximum, else /proc/cpuinfo's cpu MHz)")
    parser.add_argument("--output_dir", default="runs/benchmark", help="for results.json, results.md, results.png")
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted run: keep the models --output_dir's results.json measured "
                             "without a failure (same settings, CPU, threads, peaks, versions and commit), measure the rest")
    parser.add_argument("--report_only", action="store_true",
                        help="measure nothing: rewrite results.md and results.png from --output_dir's results.json")
    parser.add_argument("--full_last_layer", action="store_true",
                        help="export classifiers with the whole last encoder layer (default: a classifier's exports "
                             "compute it at [CLS] only, the one token its head reads: same "
                             "logits, fewer FLOPs, which its exported rows' GFLOP/s count)")
    parser.add_argument("--together", default="",
                        help="models (of --models) built at once whose inference calls share the rounds, backend by "
                             "backend, so that the ratios between them are paired too, e.g. "
                             f"{','.join(CROSS_MODEL)} (the cross-model targets'; a peak of 17.3 GB at full size). "
                             "Default none: each model's calls in rounds of their own")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: tiny 2-layer configs, seq 16, batches 1,2, 1 warm-up + 2 runs, train 2 x 16")
    args = parser.parse_args(argv)
    if args.quick:
        args.seq_len, args.batch_sizes, args.warmup, args.runs, args.train_runs, args.train_batch_size = 16, "1,2", 1, 2, 2, 2
        args.train_warmup = 1
    sizes = parse_batch_sizes(args.batch_sizes)
    if min(args.runs, args.train_runs, args.threads, args.train_batch_size) < 1:
        raise UserError("--runs, --train_runs, --train_batch_size and --threads must be >= 1")
    if args.seq_len < 2 or min(args.warmup, args.train_warmup) < 0:
        raise UserError("--seq_len must be >= 2, --warmup and --train_warmup >= 0")
    backends, models = _names(args.backends, BACKENDS, "backend"), _names(args.models, MODELS, "model")
    asked = set(_names(args.together, MODELS, "model")) if args.together else set()
    together = [m for m in models if m in asked]
    check_seq_len(models, args.seq_len, args.quick)
    check_seq_len(models, args.train_seq_len or args.seq_len, args.quick, "--train_seq_len")
    if missing and "paddle_infer_bf16" in backends:
        raise UserError(f"--backends paddle_infer_bf16: paddle's oneDNN bfloat16 kernels need AVX-512; this CPU "
                        f"lacks {', '.join(missing)} (paddle would run fp32)")
    settings = Settings(
        models=models, backends=backends,
        batch_sizes=sizes, seq_len=args.seq_len, train_batch_size=args.train_batch_size,
        train_seq_len=args.train_seq_len or args.seq_len, warmup=args.warmup, runs=args.runs,
        train_runs=args.train_runs, threads=args.threads, quick=args.quick, full_last_layer=args.full_last_layer,
        train_warmup=args.train_warmup, together=together if len(together) > 1 else [],
    )
    return settings, args


def resumed(results: dict, output_dir: str) -> dict:
    """``results`` (a fresh run's, nothing measured yet) holding the models that ``output_dir``'s
    results.json measured without a failure, its rows and wall time; refuses a run that differs."""
    path = os.path.join(output_dir, "results.json")
    old = read_json(path)
    machine = ("cpu", "threads", "peak_fp32_gflops", "peak_bf16_gflops")
    differ = [key for key in ("settings", "versions") if old.get(key) != json.loads(json.dumps(results[key]))]
    differ += [f"machine {key}" for key in machine if old.get("machine", {}).get(key) != results["machine"][key]]
    if differ:
        raise UserError(f"{path}: measured with other {', '.join(differ)}; run without --resume (or another "
                        "--output_dir) to measure afresh")
    kept = [name for name, summary in old["models"].items() if "error" not in summary
            and not any("error" in r for r in old["results"] if r["model"] == name)]
    return {**results, "models": {name: old["models"][name] for name in kept},
            "results": [r for r in old["results"] if r["model"] in kept],
            "wall_s": old.get("wall_s", 0.0), "resumed": old.get("resumed", 0) + 1}


def write_results(results: dict, output_dir: str, report_only: bool = False) -> None:
    """results.json (unless ``report_only``), results.md and results.png under ``output_dir``."""
    os.makedirs(output_dir, exist_ok=True)
    if not report_only:
        write_json(os.path.join(output_dir, "results.json"), results)
    write_text(os.path.join(output_dir, "results.md"), markdown(results))
    plot(results, os.path.join(output_dir, "results.png"))


@cli
def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; returns the results (also written under ``--output_dir``)."""
    s, args = parse_args(argv)
    if args.report_only:
        results = read_json(os.path.join(args.output_dir, "results.json"))
        write_results(results, args.output_dir, report_only=True)
        print(f"rewrote {args.output_dir}/results.md and results.png from its results.json")
        return results
    import paddle
    import torch
    import transformers

    retain_freed_memory()  # for every backend alike (common/malloc.py)
    paddle.base.core.set_num_threads(s.threads)
    torch.set_num_threads(s.threads)
    machine = cpu_info(s.threads, args.peak_ghz)
    print(f"{machine['cpu']}, {s.threads} threads: peak fp32 {machine['peak_fp32_gflops']:.0f} GFLOP/s, "
          f"bf16 {machine['peak_bf16_gflops']:.0f} GFLOP/s (assumed: {'; '.join(machine['assumptions'])})")
    estimate = estimate_seconds(s)
    print(f"{len(s.models)} models x {len(s.backends)} backends, batches {s.batch_sizes} x {s.seq_len}: "
          f"about {estimate / 60:.0f} min (rough: rates per backend assumed, see ESTIMATE_GFLOPS_PER_THREAD)",
          flush=True)
    started = time.perf_counter()
    results = {
        "settings": asdict(s),
        "machine": machine,
        "versions": {"python": platform.python_version(), "paddle": paddle.__version__, "torch": torch.__version__,
                     "transformers": transformers.__version__, "numpy": np.__version__, "code": code_version()},
        "models": {},
        "results": [],
    }
    if args.resume:
        results = resumed(results, args.output_dir)
        print(f"resuming {args.output_dir}: {', '.join(results['models']) or 'no model'} kept", flush=True)
    earlier_s = results.get("wall_s", 0.0)
    for group in groups(s):
        group = [name for name in group if name not in results["models"]]
        if not group:
            continue
        for name, (summary, rows) in bench_group([MODELS[name] for name in group], s, machine).items():
            results["models"][name] = summary
            results["results"] += rows
        results["wall_s"], results["estimate_s"] = earlier_s + time.perf_counter() - started, estimate
        write_results(results, args.output_dir)  # after every group: an interrupted run keeps what it measured
        gc.collect()
    if any(r.get("pct_of_peak", 0) > 100 for r in results["results"]):
        print(f"warning: rates above the assumed peak: the clock is above {machine['ghz']:.2f} GHz; "
              "pass --peak_ghz at the boost clock for meaningful % of peak")
    failed = sum("error" in r for r in results["results"])
    print(f"wrote {args.output_dir}/results.json, results.md, results.png in {results['wall_s'] / 60:.1f} min"
          + (f"; {failed} measurements FAILED (see results.md)" if failed else ""))
    return results


if __name__ == "__main__":
    sys.exit(1 if any("error" in r for r in main()["results"]) else 0)
