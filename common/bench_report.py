"""The benchmark's markdown table and plot, from its results.json dict."""
from __future__ import annotations

import numpy as np


def _by_kind(results: dict, kind: str) -> list[dict]:
    return [r for r in results["results"] if r["kind"] == kind]


def _backends(rows: list[dict]) -> list[str]:
    return list(dict.fromkeys(r["backend"] for r in rows))


def markdown(results: dict) -> str:
    """Inference: a row per model x backend (ms per batch at batch 1, seq/s at the others, GFLOP/s
    and % of peak at the largest batch); training: a row per model x backend."""
    s, m = results["settings"], results["machine"]
    sizes, big = s["batch_sizes"], max(s["batch_sizes"])
    lines = [
        f"# Benchmark: {m['cpu']}, {m['threads']} threads",
        "",
        f"Peak: fp32 {m['peak_fp32_gflops']:.0f} GFLOP/s, bf16 {m['peak_bf16_gflops']:.0f} GFLOP/s. Assumed: "
        + "; ".join(m["assumptions"]) + ".",
        "",
        f"Inference: sequence length {s['seq_len']}, full-length random inputs, random weights; median of "
        f"{s['runs']} runs after {s['warmup']} warm-up. FLOPs: matmuls and convolutions of the encoder "
        "(common/flops.py).",
        "",
        "| model | backend | GFLOP/seq | " + " | ".join(f"ms/batch @{b}" if b == 1 else f"seq/s @{b}" for b in sizes)
        + f" | GFLOP/s @{big} | % peak @{big} |",
        "|---|---|---:|" + "---:|" * (len(sizes) + 2),
    ]
    rows = _by_kind(results, "inference")
    found = {(r["model"], r["backend"], r["batch_size"]): r for r in rows}
    for name in s["models"]:
        gflops = results["models"][name].get("gflops_per_seq", float("nan"))
        for backend in _backends(rows):
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
            f"median of {s['train_runs']} steps after 1 warm-up.",
            "",
            "| model | backend | batch x seq | ms/step | seq/s | GFLOP/s | % peak |",
            "|---|---|---|---:|---:|---:|---:|",
        ]
        for r in train:
            cells = "failed | - | - | -" if "error" in r else (
                f"{r['ms_per_batch']:.0f} | {r['seq_per_s']:.1f} | {r['gflop_per_s']:.1f} | {r['pct_of_peak']:.1f}")
            lines.append(f"| {r['model']} | {r['backend']} | {r['batch_size']} x {r['seq_len']} | {cells} |")
    over = [r for r in results["results"] if r.get("pct_of_peak", 0) > 100]
    if over:
        lines += ["", f"**{len(over)} rates exceed the assumed peak**: the cores ran faster than {m['ghz']:.2f} GHz "
                  "(turbo); the % of peak columns are too high. Run again with `--peak_ghz` at the boost clock."]
    failed = [r for r in results["results"] if "error" in r]
    if failed:
        lines += ["", "Failures:", ""]
        lines += [f"- {r['model']} / {r['backend']} @{r['batch_size']}: {r['error']}" for r in failed]
    lines += ["", "Models (torch-paddle max |logit diff| on the same weights):", ""]
    for name, v in results["models"].items():
        about = f"FAILED: {v['error']}" if "error" in v else (
            f"{v['parameters'] / 1e6:.3g}M parameters, {v['parity_max_abs_logit_diff']:.1e}")
        lines.append(f"- {name}: {about}" + (f"; {v['note']}" if v["note"] else ""))
    return "\n".join(lines) + "\n"


def plot(results: dict, path: str) -> None:
    """Throughput at the largest batch and latency at the smallest, per model and inference backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import LogFormatter

    s = results["settings"]
    rows = _by_kind(results, "inference")
    backends = _backends(rows)
    ok = {(r["model"], r["backend"], r["batch_size"]): r for r in rows if "error" not in r}
    small, big = min(s["batch_sizes"]), max(s["batch_sizes"])
    fig, axes = plt.subplots(2, 1, figsize=(max(8.0, 1.1 * len(s["models"])), 9))
    x = np.arange(len(s["models"]))
    width = 0.8 / max(1, len(backends))
    panels = ((big, "seq_per_s", f"throughput at batch {big} (seq/s, higher is better)"),
              (small, "ms_per_batch", f"latency at batch {small} (ms, lower is better)"))
    for ax, (bs, key, title) in zip(axes, panels):
        for i, backend in enumerate(backends):
            values = [ok.get((m, backend, bs), {}).get(key, np.nan) for m in s["models"]]
            ax.bar(x + i * width, values, width, label=backend)
        ax.set_xticks(x + width * (len(backends) - 1) / 2, s["models"], rotation=25, ha="right", fontsize=8)
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(LogFormatter())  # plain numbers, not powers of ten
        ax.yaxis.set_minor_formatter(LogFormatter(minor_thresholds=(2, 0.5)))
        ax.set_title(f"{title}, sequence length {s['seq_len']}", fontsize=10)
        ax.grid(axis="y", which="both", alpha=0.3)
    axes[0].legend(fontsize=8, ncol=len(backends), loc="upper center", bbox_to_anchor=(0.5, -0.25))
    fig.suptitle(f"{results['machine']['cpu']}, {s['threads']} threads", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
