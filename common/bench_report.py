"""The benchmark's markdown table and plot, from its results.json dict."""
from __future__ import annotations

import numpy as np

from common.interleave import round_ratios


def _by_kind(results: dict, kind: str) -> list[dict]:
    return [r for r in results["results"] if r["kind"] == kind]


def _backends(rows: list[dict]) -> list[str]:
    return list(dict.fromkeys(r["backend"] for r in rows))


# Issue #6's targets for this CPU; OFA: the published latency ratio of width 2/3 to width 1.0.
TARGET_PADDLE_OVER_TORCH = 0.8
TARGET_SQUEEZEBERT_SPEEDUP = 2.5
TARGET_BF16_SPEEDUP = 3.0
TARGET_OFA_W05 = 0.55
FP32_OF = {"paddle_infer_bf16": "paddle_infer_fp32", "torch_bf16": "torch_fp32"}  # bf16 backend -> its fp32 twin
BF16_BACKENDS = tuple(FP32_OF)
EXPORTED_BACKENDS = ("paddle_infer_fp32", "paddle_ort_fp32", "paddle_infer_bf16")  # run the static export
PADDLE_FP32_PATHS = ("paddle_dygraph", "paddle_dygraph_kernels", "paddle_infer_fp32", "paddle_ort_fp32")
PUBLISHED_OFA = {"ofa-bert-base-w0.667": "0.63-0.71"}
OFA_WIDTHS = (("bert-base-uncased", "1.0"), ("ofa-bert-base-w0.833", "0.833"), ("ofa-bert-base-w0.667", "0.667"),
              ("ofa-bert-base-w0.5", "0.5"))


def _models(results: dict) -> list[str]:
    """The models measured, in the run's order (results.json stores its keys sorted)."""
    order = results["settings"].get("models", [])
    return sorted(results["models"], key=lambda m: order.index(m) if m in order else len(order))


def _index(rows: list[dict]) -> dict:
    """Rows by (model, backend, batch size)."""
    return {(r["model"], r["backend"], r["batch_size"]): r for r in rows}


def _measured(rows: list[dict]) -> dict:
    """The rows that hold a time, by (model, backend, batch size)."""
    return {k: r for k, r in _index(rows).items() if "error" not in r}


def _same_rounds(a: dict, b: dict, interleaved: bool) -> bool:
    """Whether rows ``a`` and ``b`` were timed in the same rounds: the same ``timed_with`` models (one
    interleaved measurement); rows from before it was recorded: those of one model in an ``interleaved`` run."""
    if "timed_with" in a or "timed_with" in b:
        return a.get("timed_with") == b.get("timed_with")
    return interleaved and a["model"] == b["model"]


def _ratio(num: dict, den: dict, interleaved: bool) -> float:
    """``num``'s time over ``den``'s: for rows timed in the same rounds (:func:`_same_rounds`, one run of each per
    round), the median of the rounds' ratios, in which a slow phase of the machine cancels; else the ratio of the
    medians."""
    if _same_rounds(num, den, interleaved) and len(num.get("runs_ms", ())) == len(den.get("runs_ms", ())) > 0:
        return float(np.median(round_ratios(num["runs_ms"], den["runs_ms"])))
    return num["ms_per_batch"] / den["ms_per_batch"]


def _ratios(found: dict, sizes: list[int], num: tuple, den: tuple, interleaved: bool = False) -> dict[int, float]:
    """Batch size -> the time of ``num`` over that of ``den`` ((model, backends...) pairs; the backends' best
    ratio counts), where both were measured; ``interleaved``: the run's settings' timing (:func:`_ratio`)."""
    out = {}
    for b in sizes:
        ratios = [_ratio(found[num[0], n, b], found[den[0], d, b], interleaved)
                  for n in num[1:] if (num[0], n, b) in found for d in den[1:] if (den[0], d, b) in found]
        if ratios:
            out[b] = min(ratios)
    return out


def _target_row(what: str, model: str, ratios: dict[int, float], ok, note: str = "") -> str:
    """A table row; ``ok`` (None: no target) decides "met" per ratio."""
    if not ratios:
        return f"| {what} | {model} | not measured | - | {note} |"
    cells = ", ".join(f"@{b}: {r:.2f}x" for b, r in ratios.items())
    met = "-" if ok is None else "yes" if all(ok(r) for r in ratios.values()) else "no"
    return f"| {what} | {model} | {cells} | {met} | {note} |"


def _needed(pct: dict, model: str, torch_backend: str, sizes: list[int]) -> str:
    """What the target asks of paddle: torch's % of peak at each batch size, over the target ratio
    (both count the same FLOPs); above 100 % the target is out of reach on this machine."""
    if not all((model, torch_backend, b) in pct for b in sizes):
        return ""
    torch_pct = [pct[model, torch_backend, b] for b in sizes]
    return (f"torch at {' / '.join(f'{p:.0f}' for p in torch_pct)} % of peak: needs paddle at "
            f"{' / '.join(f'{p / TARGET_PADDLE_OVER_TORCH:.0f}' for p in torch_pct)} %")


def targets(results: dict) -> list[str]:
    """Markdown lines: each target of issue #6, computed from the measured rows (ratios of ms per
    batch at each batch size; "met" means at every batch size)."""
    s = results["settings"]
    sizes, models = s["batch_sizes"], _models(results)
    inf, train = _measured(_by_kind(results, "inference")), _measured(_by_kind(results, "train"))
    interleaved = s.get("timing") == "interleaved"
    how = ""
    if interleaved:
        among = f" and among {', '.join(s['together'])}" if s.get("together") else ""
        how = f"; within a model{among} the median of the rounds' ratios"
    measured = f"ratio of ms per batch{how}, @batch size"
    lines = [f"| target | model | measured ({measured}) | met | note |", "|---|---|---|---|---|"]
    fp32 = f"paddle's best fp32 path / torch eager fp32 <= {TARGET_PADDLE_OVER_TORCH}"
    bf16 = f"paddle inference bf16 / torch bf16 autocast <= {TARGET_PADDLE_OVER_TORCH}"
    pct = {k: r["pct_of_peak"] for k, r in _index(_by_kind(results, "inference")).items() if "pct_of_peak" in r}
    for m in models:
        lines.append(_target_row(fp32, m, _ratios(inf, sizes, (m, *PADDLE_FP32_PATHS), (m, "torch_fp32"), interleaved),
                                 lambda r: r <= TARGET_PADDLE_OVER_TORCH, _needed(pct, m, "torch_fp32", sizes)))
    for m in models:
        lines.append(_target_row(bf16, m, _ratios(inf, sizes, (m, "paddle_infer_bf16"), (m, "torch_bf16"), interleaved),
                                 lambda r: r <= TARGET_PADDLE_OVER_TORCH, _needed(pct, m, "torch_bf16", sizes)))
    if {"bert-base-uncased", "squeezebert-uncased"} <= set(models):
        for backend in ("paddle_infer_fp32", "paddle_ort_fp32", "paddle_infer_bf16", "paddle_dygraph",
                        "paddle_dygraph_kernels", "torch_fp32"):
            speedup = _ratios(inf, sizes, ("bert-base-uncased", backend), ("squeezebert-uncased", backend),
                              interleaved)
            lines.append(_target_row(f"SqueezeBERT speedup over BERT-base, {backend} >= {TARGET_SQUEEZEBERT_SPEEDUP}",
                                     "squeezebert-uncased", speedup, lambda r: r >= TARGET_SQUEEZEBERT_SPEEDUP,
                                     "" if backend.startswith("paddle") else "torch: for reference"))
    for m in models:
        for bf, fp in FP32_OF.items():
            lines.append(_target_row(f"bf16 speedup over fp32, {fp.rsplit('_', 1)[0]} >= {TARGET_BF16_SPEEDUP}", m,
                                     _ratios(inf, sizes, (m, fp), (m, bf), interleaved),
                                     lambda r: r >= TARGET_BF16_SPEEDUP))
    for m in models:
        lines.append(_target_row("paddle fine-tuning step / torch's <= 1", m,
                                 _ratios(train, [s["train_batch_size"]], (m, "paddle_train", "paddle_train_kernels"),
                                         (m, "torch_train"), interleaved),
                                 lambda r: r <= 1))
    for m, width in OFA_WIDTHS[1:]:
        if m in models and "bert-base-uncased" in models:
            for backend in ("paddle_infer_fp32", "paddle_ort_fp32", "paddle_infer_bf16"):
                ratio = _ratios(inf, sizes, (m, backend), ("bert-base-uncased", backend), interleaved)
                limit = TARGET_OFA_W05 if width == "0.5" else None
                published = PUBLISHED_OFA.get(m)
                lines.append(_target_row(
                    f"OFA width {width} latency / width 1.0, {backend}" + (f" <= {limit}" if limit else ""), m, ratio,
                    (lambda r: r <= limit) if limit else None, f"published: {published}x" if published else ""))
    deltas = {}
    for r in _by_kind(results, "inference"):
        if "max_abs_logit_diff_vs_fp32" in r:
            key = r["model"], r["backend"]
            deltas[key] = max(deltas.get(key, 0.0), r["max_abs_logit_diff_vs_fp32"])
    if deltas:
        lines += ["", "bf16 logits against the same framework's fp32 logits on the same batches (max |difference| "
                  "over batch sizes; max |logit| in the model list below):", "",
                  "| model | paddle inference bf16 | torch bf16 autocast |", "|---|---:|---:|"]
        for m in models:
            cells = [f"{deltas[m, b]:.2g}" if (m, b) in deltas else "-" for b in BF16_BACKENDS]
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return lines


def summary(results: dict) -> list[str]:
    """Markdown lines: a model x backend table of ms per batch at the smallest batch / seq/s at the
    largest, and a fine-tuning table of ms per step with the kernels' ratios (the README's tables)."""
    s = results["settings"]
    small, big = min(s["batch_sizes"]), max(s["batch_sizes"])
    rows = _by_kind(results, "inference")
    found = _index(rows)
    backends, lines, models = _backends(rows), [], _models(results)
    if backends:
        lines += [f"Inference, ms per batch at batch {small} / seq/s at batch {big}:", "",
                  "| model | GFLOP/seq | " + " | ".join(backends) + " |", "|---|---:|" + "---:|" * len(backends)]
        for name in models:
            cells = []
            for backend in backends:
                one, many = found.get((name, backend, small), {}), found.get((name, backend, big), {})
                cells.append("failed" if "error" in one or "error" in many else "-" if not (one and many)
                             else f"{one['ms_per_batch']:.0f} / {many['seq_per_s']:.1f}")
            gflops = results["models"][name].get("gflops_per_seq", float("nan"))
            lines.append(f"| {name} | {gflops:.3g} | " + " | ".join(cells) + " |")
    train = _by_kind(results, "train")
    if train:
        ms = {k: r["ms_per_batch"] for k, r in _measured(train).items()}
        tbackends = _backends(train)
        base = "paddle_train_kernels" if "paddle_train_kernels" in tbackends else "paddle_train"
        pairs = [(base, b) for b in ("paddle_train", "torch_train") if b != base and {base, b} <= set(tbackends)]
        lines += ([""] if lines else []) + [
            f"Fine-tuning step (forward, cross-entropy, backward, AdamW; batch {s['train_batch_size']} x "
            f"{train[0]['seq_len']}, train mode), ms per step:", "",
            "| model | " + " | ".join(tbackends + [f"{a} / {b}" for a, b in pairs]) + " |",
            "|---|" + "---:|" * (len(tbackends) + len(pairs))]
        for name in models:
            times = {b: ms.get((name, b, s["train_batch_size"])) for b in tbackends}
            cells = ["failed" if t is None else f"{t:.0f}" for t in times.values()]
            cells += ["-" if None in (times[a], times[b]) else f"{times[a] / times[b]:.2f}x" for a, b in pairs]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _version_rank(item: tuple[str, str]) -> int:
    order = ("python", "paddle", "torch", "transformers", "numpy")
    return order.index(item[0]) if item[0] in order else len(order)


# How a results.json's rows were timed (settings' "timing"; none before it was recorded).
_TIMING = {
    "interleaved": ", the backends of a model and batch size interleaved (one call of each per round, the order "
                   "rotated every round)",
    None: ", one backend after another",
}


def _together(settings: dict) -> str:
    together = settings.get("together")
    return f"; those of {', '.join(together)} in the same rounds" if together else ""


def markdown(results: dict) -> str:
    """Inference: a row per model x backend (ms per batch at batch 1, seq/s at the others, GFLOP/s
    and % of peak at the largest batch); training: a row per model x backend."""
    s, m = results["settings"], results["machine"]
    sizes, big = s["batch_sizes"], max(s["batch_sizes"])
    lines = [
        f"# Benchmark: {m['cpu']}, {m['threads']} threads",
        "",
        f"Code: commit {results['versions'].get('code') or 'unknown'}; "
        + ", ".join(f"{k} {v}" for k, v in sorted(results["versions"].items(), key=_version_rank) if k != "code")
        + "." + (f" Measured by {results['resumed'] + 1} runs of the same settings (--resume)." if results.get("resumed") else ""),
        "",
        f"Peak: fp32 {m['peak_fp32_gflops']:.0f} GFLOP/s, bf16 {m['peak_bf16_gflops']:.0f} GFLOP/s. Assumed: "
        + "; ".join(m["assumptions"]) + ".",
        "",
        f"Inference: sequence length {s['seq_len']}, full-length random inputs, random weights; median of "
        f"{s['runs']} runs after {s['warmup']} warm-up{_TIMING[s.get('timing')]}{_together(s)}. FLOPs: matmuls and convolutions of the encoder "
        "(common/flops.py). paddle_infer_*: the model exported by common/inference.py (ConvBERT's span "
        "convolution as this repo's CPU operator, common/train_kernels.cc); paddle_dygraph_kernels: dygraph with "
        "common/train_kernels.py's layers (run_glue's evaluation on CPU); paddle_ort_fp32: the export with "
        "paddle's operators only (export.py --portable), converted by paddle2onnx and run by onnxruntime."
        + (" Exports of a classifier compute the last encoder layer at [CLS] only, the one "
           "token its head reads (common/first_token.py): same logits, and the GFLOP/seq of their rows counts that."
           if any(m.get("first_token_export") for m in results["models"].values()) else ""),
        "",
        "| model | backend | GFLOP/seq | " + " | ".join(f"ms/batch @{b}" if b == 1 else f"seq/s @{b}" for b in sizes)
        + f" | GFLOP/s @{big} | % peak @{big} |",
        "|---|---|---:|" + "---:|" * (len(sizes) + 2),
    ]
    rows = _by_kind(results, "inference")
    found = _index(rows)
    for name in _models(results):  # those measured so far
        counts = results["models"][name]
        for backend in _backends(rows):
            exported = backend in EXPORTED_BACKENDS and counts.get("first_token_export")
            gflops = counts.get("exported_gflops_per_seq" if exported else "gflops_per_seq", float("nan"))
            cells = []
            for b in sizes:
                r = found.get((name, backend, b), {"error": "not run"})
                cells.append("failed" if "error" in r else f"{r['ms_per_batch']:.1f}" if b == 1 else f"{r['seq_per_s']:.1f}")
            r = found.get((name, backend, big), {"error": "not run"})
            rate = "- | -" if "error" in r else f"{r['gflop_per_s']:.1f} | {r['pct_of_peak']:.1f}"
            lines.append(f"| {name} | {backend} | {gflops:.3g} | " + " | ".join(cells) + f" | {rate} |")
    train = _by_kind(results, "train")
    if train:
        lines += [
            "",
            f"Fine-tuning step: forward + cross-entropy + backward + AdamW, train mode; FLOPs 3x forward; "
            f"median of {s['train_runs']} steps after {s.get('train_warmup', 1)} warm-up{_TIMING[s.get('timing')]}.",
            "",
            "| model | backend | batch x seq | ms/step | seq/s | GFLOP/s | % peak |",
            "|---|---|---|---:|---:|---:|---:|",
        ]
        for r in train:
            cells = "failed | - | - | -" if "error" in r else (
                f"{r['ms_per_batch']:.0f} | {r['seq_per_s']:.1f} | {r['gflop_per_s']:.1f} | {r['pct_of_peak']:.1f}")
            lines.append(f"| {r['model']} | {r['backend']} | {r['batch_size']} x {r['seq_len']} | {cells} |")
    lines += ["", "## Summary", "", *summary(results), "", "## Targets", "", *targets(results)]
    over = [r for r in results["results"] if r.get("pct_of_peak", 0) > 100]
    if over:
        lines += ["", f"**{len(over)} rates exceed the assumed peak**: the cores ran faster than {m['ghz']:.2f} GHz "
                  "(turbo); the % of peak columns are too high. Run again with `--peak_ghz` at the boost clock."]
    failed = [r for r in results["results"] if "error" in r]
    if failed:
        lines += ["", "Failures:", ""]
        lines += [f"- {r['model']} / {r['backend']} @{r['batch_size']}: {r['error']}" for r in failed]
    lines += ["", "Models (torch-paddle max |logit diff| on the same weights):", ""]
    for name in _models(results):
        v = results["models"][name]
        about = f"FAILED: {v['error']}" if "error" in v else (
            f"{v['parameters'] / 1e6:.3g}M parameters, {v['parity_max_abs_logit_diff']:.1e} "
            f"(max |logit| {v['max_abs_logit']:.2g})")
        lines.append(f"- {name}: {about}" + (f"; {v['note']}" if v["note"] else ""))
    return "\n".join(lines) + "\n"


def plot(results: dict, path: str) -> None:
    """Throughput at the largest batch and latency at the smallest, per model and inference backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import LogFormatter

    s, models = results["settings"], _models(results)
    rows = _by_kind(results, "inference")
    backends = _backends(rows)
    ok = {k: r for k, r in _index(rows).items() if "error" not in r}
    small, big = min(s["batch_sizes"]), max(s["batch_sizes"])
    fig, axes = plt.subplots(2, 1, figsize=(max(8.0, 1.1 * len(models)), 9))
    x = np.arange(len(models))
    width = 0.8 / max(1, len(backends))
    panels = ((big, "seq_per_s", f"throughput at batch {big} (seq/s, higher is better)"),
              (small, "ms_per_batch", f"latency at batch {small} (ms, lower is better)"))
    for ax, (bs, key, title) in zip(axes, panels):
        for i, backend in enumerate(backends):
            values = [ok.get((m, backend, bs), {}).get(key, np.nan) for m in models]
            ax.bar(x + i * width, values, width, label=backend)
        ax.set_xticks(x + width * (len(backends) - 1) / 2, models, rotation=25, ha="right", fontsize=8)
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(LogFormatter())  # plain numbers, not powers of ten
        ax.yaxis.set_minor_formatter(LogFormatter(minor_thresholds=(2, 0.5)))
        ax.set_title(f"{title}, sequence length {s['seq_len']}", fontsize=10)
        ax.grid(axis="y", which="both", alpha=0.3)
    if backends:  # a training-only run has no inference bars
        axes[0].legend(fontsize=8, ncol=len(backends), loc="upper center", bbox_to_anchor=(0.5, -0.25))
    fig.suptitle(f"{results['machine']['cpu']}, {s['threads']} threads", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
