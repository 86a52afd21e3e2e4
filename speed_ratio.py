"""Paired speed ratio: two (model, backend) inference measurements interleaved run for run.

``benchmark.py`` interleaves the backends of one model but times one model after another, minutes apart,
so a ratio of two models' rows also holds whatever the machine's speed did in between (on a shared 2-core
VM, the same measurement drifted by up to 30 % within minutes). Here both sides are built first; then, per
batch size, after ``--warmup`` untimed calls of each, ``--rounds`` rounds each time one call of each side,
in the order base, other in even rounds and other, base in odd ones (``common/interleave.py``: a steady
drift then favours neither). The
speedup of a round is base time / other time; reported are the median, minimum and maximum over the
rounds and each side's median ms; with ``--target``, whether the median reaches it. Writes
``args.json``, ``speed_ratio.json`` and ``speed_ratio.md``; ``ratio_table.py`` tabulates a folder of runs.
``--skip_done`` keeps a pair already measured there with the same arguments, CPU and commit, so a
script of many pairs (``scripts/torch_ratios.sh``) that was stopped continues where it was.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from typing import NamedTuple

import common  # noqa: F401  (zlib before paddle)
from common.bench_models import MODELS, build_pair, check_names, check_seq_len, make_batch, parse_batch_sizes
from common.bench_report import EXPORTED_BACKENDS
from common.errors import UserError, cli, error_line
from common.fsutil import read_json, write_report
from common.hardware import cpu_info
from common.interleave import interleaved, made, round_ratios
from common.malloc import retain_freed_memory
from common.provenance import code_version

from benchmark import INFERENCE_BACKENDS, SETTLE_S, inference_step, make_predictors, with_kernels


def side(value: str) -> tuple[str, str]:
    """``MODEL:BACKEND`` -> (model, backend), both checked."""
    model, sep, backend = value.partition(":")
    if not sep:
        raise UserError(f"{value!r}: expected MODEL:BACKEND, e.g. squeezebert-uncased:paddle_infer_fp32")
    check_names([model], MODELS, "model")
    check_names([backend], INFERENCE_BACKENDS, "inference backend")
    return model, backend


def summarize(base_s: list[float], other_s: list[float]) -> dict:
    """Each side's median ms and the per-round speedup (base / other): median, min, max."""
    speedups = round_ratios(base_s, other_s)
    return {"base_ms": 1e3 * statistics.median(base_s), "other_ms": 1e3 * statistics.median(other_s),
            "speedup_median": statistics.median(speedups), "speedup_min": min(speedups),
            "speedup_max": max(speedups), "base_runs_ms": [1e3 * t for t in base_s],
            "other_runs_ms": [1e3 * t for t in other_s]}


# What the classifiers' exports computed, by --full_last_layer (runs before it: no note).
LAST_LAYER_NOTE = {
    False: " Exported classifiers: the last layer at [CLS] only (common/first_token.py).",
    True: " Exported classifiers: the whole last layer (--full_last_layer).",
}


def markdown(result: dict) -> str:
    a = result["args"]
    prov = result["provenance"]
    lines = [f"# Speedup of {a['other']} over {a['base']}", "",
             f"Each side: {a['warmup']} untimed, then {a['rounds']} timed calls interleaved with the other's; "
             f"seq {a['seq_len']}, {a['threads']} threads; {prov['cpu']}; code {prov['code']}."
             + LAST_LAYER_NOTE.get(a.get("full_last_layer"), ""), "",
             "| batch | base ms (median) | other ms (median) | speedup median | min | max |"
             + (f" met (>= {a['target']:g}) |" if a["target"] else ""),
             "|---:|---:|---:|---:|---:|---:|" + ("---|" if a["target"] else "")]
    lines += [f"| {bs} | {r['base_ms']:.1f} | {r['other_ms']:.1f} | {r['speedup_median']:.2f} | "
              f"{r['speedup_min']:.2f} | {r['speedup_max']:.2f} |" + (f" {'yes' if r['met'] else 'no'} |" if "met" in r else "")
              for bs, r in result["batches"].items()]
    return "\n".join(lines) + "\n"


class Plan(NamedTuple):
    """What the arguments ask for: the two (model, backend) sides and the batch sizes."""

    base: tuple[str, str]
    other: tuple[str, str]
    batch_sizes: list[int]


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, Plan]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="bert-base-uncased:paddle_infer_fp32",
                        help="MODEL:BACKEND to compare against (default bert-base-uncased:paddle_infer_fp32)")
    parser.add_argument("--other", default="squeezebert-uncased:paddle_infer_fp32",
                        help="MODEL:BACKEND whose speedup is reported (default squeezebert-uncased:paddle_infer_fp32)")
    parser.add_argument("--batch_sizes", default="1,16,32", help="comma-separated (default 1,16,32)")
    parser.add_argument("--seq_len", type=int, default=128, help="default 128")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls of each side first (default 2)")
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds, one call of each side (default 7)")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="default all cores")
    parser.add_argument("--target", type=float,
                        help="the speedup a target asks for, e.g. 2.5 (0.8x the time: 1.25); reported as met or not")
    parser.add_argument("--output_dir", default="runs/speed_ratio", help="for args.json, speed_ratio.json and .md")
    parser.add_argument("--full_last_layer", action="store_true",
                        help="export classifiers with the whole last encoder layer (default: at [CLS] only, as in "
                             "benchmark.py)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: tiny 2-layer configs, seq 16, batches 1,2, 1 warm-up, 3 rounds")
    parser.add_argument("--skip_done", action="store_true",
                        help="measure nothing where --output_dir already holds this pair measured with the same "
                             "arguments on the same CPU at the same commit (a stopped script of pairs continues)")
    args = parser.parse_args(argv)
    if args.quick:
        args.seq_len, args.batch_sizes, args.warmup, args.rounds = 16, "1,2", 1, 3
    plan = Plan(side(args.base), side(args.other), parse_batch_sizes(args.batch_sizes))
    if plan.base == plan.other:
        raise UserError(f"--base and --other are the same: {args.base}")
    if min(args.rounds, args.threads) < 1 or args.warmup < 0 or args.seq_len < 2:
        raise UserError("--rounds and --threads must be >= 1, --warmup >= 0, --seq_len >= 2")
    if args.target is not None and not args.target > 0:
        raise UserError(f"--target must be a speedup > 0, not {args.target:g}")
    check_seq_len([plan.base[0], plan.other[0]], args.seq_len, args.quick)
    if "paddle_infer_bf16" in (plan.base[1], plan.other[1]):
        from common.inference import PredictorOptions

        PredictorOptions(precision="bf16").check()  # refuses a CPU that would run it as fp32
    return args, plan


def measured(args: argparse.Namespace, provenance: dict) -> dict | None:
    """The result ``--output_dir`` holds for these arguments (``--skip_done`` aside), CPU and commit; else None."""
    path = os.path.join(args.output_dir, "speed_ratio.json")
    if not os.path.isfile(path):
        return None
    done = read_json(path)
    same = lambda a: {k: v for k, v in a.items() if k != "skip_done"}  # noqa: E731
    if same(done.get("args", {})) != same(vars(args)) or done.get("provenance") != provenance:
        return None
    return done


@cli
def main(argv: list[str] | None = None) -> dict:
    """Measure; returns the result (also written under ``--output_dir``)."""
    args, plan = parse_args(argv)
    provenance = {"cpu": cpu_info(args.threads)["cpu"], "code": code_version()}
    if args.skip_done and (done := measured(args, provenance)) is not None:
        print(f"{args.output_dir}: measured already (same arguments, CPU and commit {provenance['code']}), kept")
        return done
    import paddle
    import torch

    retain_freed_memory()
    paddle.base.core.set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    result = {"args": vars(args), "provenance": provenance, "batches": {}}
    with tempfile.TemporaryDirectory() as tmp:
        built, pair = {}, (plan.base, plan.other)  # built: model -> (benchmark.Models, config, predictors)
        for model, backend in pair:
            if model not in built:
                print(f"{model}: building", flush=True)
                torch_model, paddle_model, cfg = build_pair(MODELS[model], args.quick)
                built[model] = (with_kernels(torch_model, paddle_model, [b for m, b in pair if m == model]), cfg, {})
            models, _, predictors = built[model]
            if backend in EXPORTED_BACKENDS:
                predictors.update(make_predictors(models.paddle, [backend], args.threads,
                                                  os.path.join(tmp, f"{model}_{backend}"), not args.full_last_layer))

        for bs in plan.batch_sizes:
            sides = []
            for model, backend in pair:
                models, cfg, predictors = built[model]
                batch = make_batch(bs, args.seq_len, cfg["vocab_size"])
                sides.append(made(lambda: inference_step(backend, models, predictors, batch)))
            interleaved(sides, args.warmup, args.rounds, 0.0 if args.quick else SETTLE_S)
            if (error := next((side.error for side in sides if side.error is not None), None)) is not None:
                # an export or predictor that could not be made, or a call that failed
                raise UserError(error_line(error)) from error
            result["batches"][str(bs)] = row = summarize(sides[0].times, sides[1].times)
            if args.target:
                row["met"] = row["speedup_median"] >= args.target
            print(f"batch {bs:>3}: base {row['base_ms']:.1f} ms, other {row['other_ms']:.1f} ms, speedup "
                  f"{row['speedup_median']:.2f} (rounds {row['speedup_min']:.2f}-{row['speedup_max']:.2f})",
                  flush=True)
    text = markdown(result)
    write_report(args.output_dir, "speed_ratio", result["args"], result, text)
    print(text, end="")
    return result


if __name__ == "__main__":
    main()
