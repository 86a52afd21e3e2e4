"""Time OFA distillation steps (every width on one batch, then AdamW) on a full-size config with random weights.

``--distill ours``: ``ofa.distill_step`` (what ``run_glue_ofa.py`` runs: the teacher once per batch);
``--distill paddleslim``: PaddleSlim's ``OFA.forward`` + ``calc_distill_loss`` per width (the teacher again for
every width), the same losses. ``--train_kernels``: teacher and student on this repo's CPU operators, and glibc
keeping freed memory (process-wide, hence one setting per run). Writes args.json and metrics.json to --output_dir;
``--table DIR`` writes DIR/results.md, a table of the runs under DIR (``scripts/ofa_distill_speed.sh``).
"""
from __future__ import annotations

import argparse
import copy
import glob
import json
import os
import statistics
import time

import common  # noqa: F401  (zlib before paddle)
import paddle
from common.bench_models import MODELS, build_pair, check_names, check_seq_len, make_batch
from common.errors import UserError, cli
from common.fsutil import write_json
from common.hardware import cpu_info
from common.provenance import code_version
from common.malloc import retain_freed_memory
from common.train_glue import param_groups
from common.train_kernels import use_train_kernels
from ofa_bert.run_glue_ofa import WIDTHS, true_false

BERT_MODELS = [name for name, m in MODELS.items() if m.model_type == "bert" and m.width == 1.0]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="bert-base-uncased", help=", ".join(BERT_MODELS))
    p.add_argument("--distill", choices=["ours", "paddleslim"], default="ours",
                   help="ours: the teacher once per batch (run_glue_ofa.py); paddleslim: OFA.forward per width")
    p.add_argument("--train_kernels", type=true_false, default=True, help="true or false")
    p.add_argument("--width_mult_list", type=float, nargs="+", default=list(WIDTHS))
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--seq_len", type=int, default=128)
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    p.add_argument("--steps", type=int, default=3, help="timed steps (the median is reported)")
    p.add_argument("--quick", action="store_true", help="a tiny config (tests)")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--seed", type=int, default=0, help="paddle's generator (dropout)")
    p.add_argument("--output_dir", help="where args.json and metrics.json go (required unless --table)")
    p.add_argument("--table", metavar="DIR", help="only write DIR/results.md from the runs' metrics.json under DIR")
    return p.parse_args(argv)


def table(root: str) -> str:
    """Markdown: ms per OFA step of each run under ``root``, per model, and each one's speedup over PaddleSlim's
    distillation on paddle's kernels (the run_glue_ofa.py of before)."""
    runs = []
    for path in sorted(glob.glob(os.path.join(root, "**", "metrics.json"), recursive=True)):
        with open(path) as f:
            runs.append(json.load(f))
    if not runs:
        raise UserError(f"{root}: no metrics.json of time_distill.py under it")
    lines = ["| model | distillation | train kernels | widths | batch | threads | ms per step | speedup |",
             "|---|---|---|---|---|---|---|---|"]
    for run in sorted(runs, key=lambda r: (r["model"], r["quick"], -r["ms_per_step"])):
        base = [r["ms_per_step"] for r in runs if (r["model"], r["quick"]) == (run["model"], run["quick"])
                and r["distill"] == "paddleslim"
                and not r["train_kernels"] and r["batch_size"] == run["batch_size"] and r["seq_len"] == run["seq_len"]]
        speedup = f"{base[0] / run['ms_per_step']:.2f}x" if base else "-"
        model = run["model"] + (" (--quick)" if run["quick"] else "")
        lines.append(f"| {model} | {run['distill']} | {str(run['train_kernels']).lower()} | "
                     f"{len(run['widths'])} | {run['batch_size']} x {run['seq_len']} | {run['threads']} | "
                     f"{run['ms_per_step']:.0f} | {speedup} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    """Time the steps (or write the table); returns the metrics written to metrics.json."""
    args = parse_args(argv)
    if args.table:
        text = table(args.table)
        with open(os.path.join(args.table, "results.md"), "w") as f:
            f.write(text)
        print(text, end="")
        return {}
    if not args.output_dir:
        raise UserError("--output_dir is required (or --table DIR)")
    check_names([args.model], BERT_MODELS, "model")
    if min(args.steps, args.batch_size, args.seq_len) < 1 or args.warmup < 0:
        raise UserError("--steps, --batch_size and --seq_len must be >= 1, --warmup >= 0")
    check_seq_len([args.model], args.seq_len, args.quick)
    from ofa_bert import ofa

    paddle.set_device("cpu")
    paddle.base.core.set_num_threads(args.threads)
    _, teacher, cfg = build_pair(MODELS[args.model], args.quick)
    student = copy.deepcopy(teacher)
    for param in teacher.parameters():
        param.stop_gradient = True
    ofa.bind_attention(student)
    ours = args.distill == "ours"
    ofa_model = ofa.build_ofa(student) if ours else ofa.build_paddleslim_ofa(student, teacher, 0.1)
    if args.train_kernels:
        retain_freed_memory()
        use_train_kernels(teacher)
        use_train_kernels(student)
    configs = [ofa.width_config(ofa_model, w) for w in sorted(set(args.width_mult_list), reverse=True)]

    def step(batch):  # lambda_rep 0.1, lambda_logit 1 (the recipe's)
        if ours:
            return ofa.distill_step(ofa_model, teacher, batch, configs, 0.1, 1.0, False)
        return ofa.paddleslim_distill_step(ofa_model, batch, configs, 1.0)

    optimizer = paddle.optimizer.AdamW(learning_rate=1e-5, parameters=param_groups(student, 0.0))
    batch = {k: paddle.to_tensor(v) for k, v in make_batch(args.batch_size, args.seq_len, cfg["vocab_size"]).items()}
    student.train()
    paddle.seed(args.seed)
    seconds, losses = [], []
    for i in range(args.warmup + args.steps):
        start = time.perf_counter()
        losses.append(step(batch))
        optimizer.step()
        optimizer.clear_grad()
        if i >= args.warmup:
            seconds.append(time.perf_counter() - start)
    metrics = {"model": args.model, "quick": args.quick, "distill": args.distill, "train_kernels": args.train_kernels,
               "widths": sorted(set(args.width_mult_list), reverse=True), "batch_size": args.batch_size,
               "seq_len": args.seq_len, "threads": args.threads, "ms_per_step": round(statistics.median(seconds) * 1e3, 1),
               "runs_ms": [round(s * 1e3, 1) for s in seconds], "losses": losses,
               "cpu": cpu_info(args.threads)["cpu"], "code": code_version()}
    os.makedirs(args.output_dir, exist_ok=True)
    write_json(os.path.join(args.output_dir, "args.json"), vars(args))
    write_json(os.path.join(args.output_dir, "metrics.json"), metrics)
    print(f"{args.model} OFA step ({args.distill} distillation, train_kernels {args.train_kernels}, "
          f"{len(configs)} widths, batch {args.batch_size} x {args.seq_len}, {args.threads} threads): "
          f"{metrics['ms_per_step']:.0f} ms (median of {args.steps})")
    return metrics


if __name__ == "__main__":
    cli(main)()
