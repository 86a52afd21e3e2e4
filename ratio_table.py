"""One table of the paired speed ratios in a folder: each subfolder a ``speed_ratio.py`` run.

Per pair: the target (when the run had one), the speedup's median (min-max over the rounds) at each
batch size, and at how many batch sizes the median reaches the target. Also the CPU, the commits
and the settings the runs recorded. Where pairs compare a model with itself (torch_ratios.sh), one
table per baseline backend: each model's speedup on every path and on its best path per batch size,
with how often that best path reaches the target. Writes ``ratios.md`` in the folder and prints it.
"""
from __future__ import annotations

import argparse
import os

from common.errors import UserError, cli
from common.fsutil import read_runs, write_text


def collect(folder: str) -> list[dict]:
    """The ``speed_ratio.json`` results of ``folder``'s subfolders, by subfolder name."""
    return [result for _, result in read_runs(folder, "speed_ratio.json", ("args", "provenance", "batches"),
                                              "speed_ratio.py")]


def sides(args: dict) -> tuple[list[str], list[str]]:
    """A run's base and other side, each as [model, backend]."""
    return args["base"].split(":"), args["other"].split(":")


def pair_name(args: dict) -> str:
    """``other / base``, the shared model or backend said once."""
    (bm, bb), (om, ob) = sides(args)
    if bb == ob:
        return f"{om} / {bm}, {bb}"
    if bm == om:
        return f"{ob} / {bb}, {bm}"
    return f"{args['other']} / {args['base']}"


def table(results: list[dict]) -> str:
    """The markdown table of ``results`` (see the module docstring)."""
    batches = sorted({int(b) for r in results for b in r["batches"]})
    settings = sorted({(r["args"]["seq_len"], r["args"]["warmup"], r["args"]["rounds"], r["args"]["threads"])
                       for r in results})
    lines = ["# Paired speed ratios (speedup of the first over the second)", "",
             "CPU: " + "; ".join(sorted({r["provenance"]["cpu"] for r in results})) + ". Code: "
             + ", ".join(sorted({r["provenance"]["code"] for r in results})) + ". Seq, warm-up calls, rounds, "
             "threads: " + "; ".join(" / ".join(map(str, s)) for s in settings) + ".", "",
             "Each cell: the median speedup over the rounds (min-max).", "",
             "| pair | target | " + " | ".join(f"batch {b}" for b in batches) + " | met |",
             "|---|---:|" + "---:|" * len(batches) + "---|"]
    for r in results:
        target = r["args"].get("target")
        cells = []
        for b in batches:
            row = r["batches"].get(str(b))
            cells.append(f"{row['speedup_median']:.2f} ({row['speedup_min']:.2f}-{row['speedup_max']:.2f})"
                         if row else "")
        met = f"{sum(row.get('met', False) for row in r['batches'].values())} of {len(r['batches'])}"
        lines.append(f"| {pair_name(r['args'])} | {f'{target:g}' if target else ''} | " + " | ".join(cells)
                     + f" | {met if target else ''} |")
    return "\n".join(lines) + "\n"


def per_model(results: list[dict]) -> str:
    """Per baseline backend, each model's median speedup on every path and on the fastest one.

    Only pairs of one model on two backends count; empty when there are none.
    """
    groups: dict[str, dict[str, dict[str, dict]]] = {}
    for r in results:
        (bm, bb), (om, ob) = sides(r["args"])
        if bm == om:
            groups.setdefault(bb, {}).setdefault(bm, {})[ob] = r
    sections = []
    for base, models in sorted(groups.items()):
        paths = sorted({p for runs in models.values() for p in runs})
        batches = sorted({int(b) for runs in models.values() for r in runs.values() for b in r["batches"]})
        targeted = any(r["args"].get("target") for runs in models.values() for r in runs.values())
        lines = [f"## Per model, speedup over {base}", "",
                 "Median speedup at batch " + " / ".join(map(str, batches)) + "; best: the fastest path at each "
                 "batch size" + ("; met: at how many batch sizes the best path reaches the target." if targeted
                                 else "."), "",
                 "| model | " + " | ".join(paths) + " | best |" + (" met |" if targeted else ""),
                 "|---|" + "---|" * (len(paths) + 1 + targeted)]
        cells = met = models_met = 0
        for model, runs in models.items():
            rows = {p: [runs[p]["batches"].get(str(b)) if p in runs else None for b in batches] for p in paths}
            best = [max((row[i] for row in rows.values() if row[i]), key=lambda x: x["speedup_median"], default=None)
                    for i in range(len(batches))]
            line = f"| {model} | " + " | ".join(_medians(rows[p]) for p in paths) + f" | {_medians(best)} |"
            if targeted:
                n = sum(bool(row and row.get("met")) for row in best)
                line += f" {n} of {len(batches)} |"
                cells, met, models_met = cells + len(batches), met + n, models_met + (n == len(batches))
            lines.append(line)
        if targeted:
            lines += ["", f"Best path meets the target in {met} of {cells} cells, at every batch size for "
                      f"{models_met} of {len(models)} models."]
        sections.append("\n".join(lines) + "\n")
    return "".join("\n" + s for s in sections)


def _medians(rows: list[dict | None]) -> str:
    return " / ".join(f"{row['speedup_median']:.2f}" if row else "–" for row in rows)


@cli
def main(argv: list[str] | None = None) -> str:
    """Write and print the table; returns it."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", help="the runs' parent folder, e.g. runs/speed_ratios")
    args = parser.parse_args(argv)
    results = collect(args.folder)
    text = table(results) + per_model(results)
    write_text(os.path.join(args.folder, "ratios.md"), text)
    print(text, end="")
    return text


if __name__ == "__main__":
    main()
