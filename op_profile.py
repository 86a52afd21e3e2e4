"""Where an exported model's time goes: the per-operator profile of one benchmark model on one backend.

The model of ``benchmark.py`` (full-size config, random weights; ``--quick``: tiny) runs on a full-length
two-segment batch as ``--backend`` runs it: ``paddle_ort_fp32`` (default) exports it with paddle's own operators,
converts it with paddle2onnx and profiles onnxruntime (its profiler; operators after its fusions);
``paddle_infer_fp32`` / ``paddle_infer_bf16`` profile ``paddle.inference`` on the export with this repo's operators
(paddle's profiler; operators after paddle's IR passes and, in bf16, this repo's program rewrite). After
``--warmup`` untimed runs (both runtimes settle over a few runs of a new batch shape), ``--runs`` runs are recorded
(freed memory kept for reuse, as in ``benchmark.py``). Per operator type: ms per run, share, calls per run. The matmul-type operators
(onnxruntime: MatMul, FusedMatMul, Gemm, FusedGemm; paddle: fc, the matmuls, and this repo's operators that hold
GEMMs with their epilogues: attention, SqueezeBERT's grouped linears, ConvBERT's span convolution) also get the
encoder's FLOP rate over their time (``common/flops.py``'s count, which holds only matmuls; for a classifier,
exported with its last layer at [CLS] only, that export's count). ``--output_dir`` receives args.json,
op_profile.json and op_profile.md.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections import defaultdict
from importlib.metadata import version

import common  # noqa: F401  (zlib before paddle)
from common.bench_models import MODELS, build_pair, check_names, check_seq_len, make_batch
from common.errors import UserError, cli
from common.flops import forward_flops
from common.fsutil import write_report
from common.hardware import cpu_info
from common.malloc import retain_freed_memory
from common.onnx_runtime import ONNX_FILE, OnnxPredictor, convert_to_onnx
from common.provenance import code_version

BACKENDS = ("paddle_ort_fp32", "paddle_infer_fp32", "paddle_infer_bf16")
MATMUL_OPS = ("MatMul", "FusedMatMul", "Gemm", "FusedGemm",  # onnxruntime
              "fc", "matmul", "matmul_v2", "fused_matmul", "ct_attention", "ct_attention_bf16", "ct_span_conv",
              "ct_grouped_linear", "ct_grouped_linear_bf16", "ct_grouped_linear_add_norm",
              "ct_grouped_linear_add_norm_bf16", "ct_grouped_ffn_add_norm", "ct_grouped_ffn_add_norm_bf16",
              "ct_grouped_self_attention", "ct_grouped_self_attention_bf16")


def op_times(events: list[dict], warmup: int = 1) -> dict[str, dict]:
    """Per operator type of an onnxruntime profile (its JSON events), the first ``warmup`` runs left out: ms and
    calls per run, most time first."""
    starts = sorted(e["ts"] for e in events if e.get("cat") == "Session" and e["name"] == "model_run")
    if len(starts) <= warmup:
        raise ValueError(f"the profile holds {len(starts)} run(s); the first {warmup} are left out, so at least "
                         f"{warmup + 1} are needed")
    ms, calls = defaultdict(float), defaultdict(int)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= starts[warmup]:
            op = e["args"]["op_name"]
            ms[op] += e["dur"] / 1000
            calls[op] += 1
    runs = len(starts) - warmup
    return {op: {"ms_per_run": ms[op] / runs, "calls_per_run": calls[op] / runs}
            for op in sorted(ms, key=ms.get, reverse=True)}


def profile_onnx(path: str, batch: dict, threads: int, warmup: int, runs: int) -> dict[str, dict]:
    """:func:`op_times` of ``runs`` onnxruntime runs of the ONNX model ``path`` on ``batch``, after ``warmup``
    untimed ones (allocations, weight pre-packing)."""
    predictor = OnnxPredictor(path, threads, profile_prefix=os.path.join(os.path.dirname(path), "ort_profile"))
    for _ in range(warmup + runs):
        predictor(batch)
    with open(predictor.end_profiling(), encoding="utf-8") as f:
        return op_times(json.load(f), warmup)


def paddle_op_times(steps: list, runs: int) -> dict[str, dict]:
    """Per operator type of paddle profiler steps (host nodes, one per run): ms and calls per run of the
    outermost operator events (an operator's inner events are its own time), most time first."""
    ms, calls = defaultdict(float), defaultdict(int)
    pending = [child for step in steps for child in step.children_node]
    while pending:
        node = pending.pop()
        if node.type.name == "Operator":
            ms[node.name] += (node.end_ns - node.start_ns) / 1e6
            calls[node.name] += 1
        else:
            pending.extend(node.children_node)
    return {op: {"ms_per_run": ms[op] / runs, "calls_per_run": calls[op] / runs}
            for op in sorted(ms, key=ms.get, reverse=True)}


def profile_paddle(prefix: str, batch: dict, threads: int, warmup: int, runs: int, precision: str,
                   fuse_blocks: bool = True) -> dict[str, dict]:
    """:func:`paddle_op_times` of ``runs`` ``paddle.inference`` runs of the exported model ``prefix`` on ``batch``,
    after ``warmup`` untimed ones (oneDNN primitives, weight reorders); ``fuse_blocks``: as
    :class:`common.inference.PredictorOptions`'."""
    import paddle.profiler as profiler
    from common.inference import Predictor, PredictorOptions

    predictor = Predictor(prefix, PredictorOptions(threads=threads, precision=precision, fuse_blocks=fuse_blocks))
    for _ in range(warmup):
        predictor(batch)
    prof = profiler.Profiler(targets=[profiler.ProfilerTarget.CPU])
    prof.start()
    for _ in range(runs):
        predictor(batch)
        prof.step()
    prof.stop()
    steps = [node for root in prof.profiler_result.get_data().values() for node in root.children_node
             if node.type.name == "ProfileStep"]
    return paddle_op_times(steps, runs)


def summarize(ops: dict[str, dict], flops: int) -> dict:
    """Totals, shares and the matmul-type operators' FLOP rate of ``flops`` per run."""
    total = sum(v["ms_per_run"] for v in ops.values())
    for v in ops.values():
        v["percent"] = 100 * v["ms_per_run"] / total
    matmul_ms = sum(v["ms_per_run"] for op, v in ops.items() if op in MATMUL_OPS)
    return {"total_ms_per_run": total, "matmul_ms_per_run": matmul_ms, "matmul_percent": 100 * matmul_ms / total,
            "encoder_gflop_per_run": flops / 1e9, "matmul_gflop_per_s": flops / 1e6 / matmul_ms if matmul_ms else None,
            "ops": ops}


RUNTIMES = {"paddle_ort_fp32": "onnxruntime", "paddle_infer_fp32": "paddle.inference fp32",
            "paddle_infer_bf16": "paddle.inference bf16"}


def markdown(model: str, args: argparse.Namespace, summary: dict) -> str:
    versions = ", ".join(f"{name} {v}" for name, v in summary["provenance"].items() if name not in ("cpu", "code"))
    lines = [f"# {RUNTIMES[args.backend]} operator profile: {model}, batch {args.batch_size} x {args.seq_len}, "
             f"{args.threads} threads, {args.runs} runs after {args.warmup}"
             f"{', post-norm blocks unfused' if args.no_fuse_blocks else ''}", "",
             f"Operator time {summary['total_ms_per_run']:.1f} ms per run; matmul-type operators "
             f"{summary['matmul_ms_per_run']:.1f} ms ({summary['matmul_percent']:.1f} %), "
             f"{summary['encoder_gflop_per_run']:.1f} GFLOP at {summary['matmul_gflop_per_s'] or 0:.1f} GFLOP/s.", "",
             f"{summary['provenance']['cpu']}; code {summary['provenance']['code']}, {versions}.", "",
             "| operator | ms per run | % | calls per run |", "|---|---:|---:|---:|"]
    lines += [f"| {op} | {v['ms_per_run']:.2f} | {v['percent']:.1f} | {v['calls_per_run']:g} |"
              for op, v in summary["ops"].items()]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help=f"one of: {', '.join(MODELS)}")
    parser.add_argument("--backend", default="paddle_ort_fp32",
                        help=f"the runtime profiled, one of: {', '.join(BACKENDS)} (default paddle_ort_fp32)")
    parser.add_argument("--batch_size", type=int, default=16, help="default 16")
    parser.add_argument("--seq_len", type=int, default=128, help="default 128")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="default all cores")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs first (default 3)")
    parser.add_argument("--runs", type=int, default=5, help="profiled runs (default 5)")
    parser.add_argument("--output_dir", default="runs/op_profile", help="for args.json, op_profile.json and .md")
    parser.add_argument("--no_fuse_blocks", action="store_true",
                        help="paddle_infer_fp32: keep paddle's fcs, adds and layer norms where the predictor runs "
                             "post-norm blocks as this repo's fused operators (PredictorOptions.fuse_blocks), "
                             "for an A/B of the two")
    parser.add_argument("--quick", action="store_true", help="smoke run: the tiny 2-layer config, batch 2 x 16, 1 + 2 runs")
    args = parser.parse_args(argv)
    if args.quick:
        args.batch_size, args.seq_len, args.warmup, args.runs = 2, 16, 1, 2
    check_names([args.model], MODELS, "model")
    check_names([args.backend], BACKENDS, "backend")
    if min(args.batch_size, args.threads, args.warmup, args.runs) < 1 or args.seq_len < 2:
        raise UserError("--batch_size, --threads, --warmup and --runs must be >= 1, --seq_len >= 2")
    if args.no_fuse_blocks and args.backend != "paddle_infer_fp32":
        raise UserError(f"--no_fuse_blocks: only paddle_infer_fp32 fuses post-norm blocks, not {args.backend}")
    if args.backend != "paddle_ort_fp32":  # the predictor's own checks (bf16: the CPU flags), before building
        from common.inference import PredictorOptions

        PredictorOptions(threads=args.threads, precision=args.backend.rsplit("_", 1)[1]).check()
    return args


@cli
def main(argv: list[str] | None = None) -> dict:
    """Profile; returns the summary (also written under ``--output_dir``)."""
    from common.first_token import first_token_layer
    from common.inference import export_static

    args = parse_args(argv)
    check_seq_len([args.model], args.seq_len, args.quick)
    retain_freed_memory()  # as benchmark.py: no page faults on outputs allocated anew each run (common/malloc.py)
    onnx = args.backend == "paddle_ort_fp32"
    print(f"{args.model}: building, exporting{' and converting to ONNX' if onnx else ''}", flush=True)
    _, paddle_model, cfg = build_pair(MODELS[args.model], args.quick)
    batch = make_batch(args.batch_size, args.seq_len, cfg["vocab_size"])
    with tempfile.TemporaryDirectory() as tmp:
        prefix = export_static(paddle_model, tmp, custom_ops=not onnx)
        print(f"profiling {args.warmup} + {args.runs} runs at batch {args.batch_size} x {args.seq_len}", flush=True)
        if onnx:
            ops = profile_onnx(convert_to_onnx(prefix, os.path.join(tmp, ONNX_FILE)), batch, args.threads, args.warmup,
                               args.runs)
        else:
            ops = profile_paddle(prefix, batch, args.threads, args.warmup, args.runs, args.backend.rsplit("_", 1)[1],
                                 not args.no_fuse_blocks)
    at_cls = first_token_layer(paddle_model) is not None  # the export's last layer at [CLS] only: its FLOPs
    summary = summarize(ops, args.batch_size * forward_flops(cfg, args.seq_len, at_cls))
    summary["last_layer_at_cls"] = at_cls
    versions = {"onnxruntime": version("onnxruntime"), "paddle2onnx": version("paddle2onnx")} if onnx else \
        {"paddle": version("paddlepaddle")}
    summary["provenance"] = {"cpu": cpu_info(args.threads)["cpu"], "code": code_version(), **versions}
    text = markdown(args.model, args, summary)
    write_report(args.output_dir, "op_profile", vars(args), summary, text)
    print(text, end="")
    return summary


if __name__ == "__main__":
    main()
