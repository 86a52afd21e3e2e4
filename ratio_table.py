"""One table of the paired speed ratios in a folder: each subfolder a ``speed_ratio.py`` run.

Per pair: the target (when the run had one), the speedup's median (min-max over the rounds) at each
batch size, and at how many batch sizes the median reaches the target. Also the CPU, the commits
and the settings the runs recorded. Writes ``ratios.md`` in the folder and prints it.
"""
from __future__ import annotations

import argparse
import os

from common.errors import UserError, cli
from common.fsutil import read_json, write_text


def collect(folder: str) -> list[dict]:
    """The ``speed_ratio.json`` results of ``folder``'s subfolders, by subfolder name."""
    if not os.path.isdir(folder):
        raise UserError(f"{folder}: not a directory")
    paths = [os.path.join(folder, d, "speed_ratio.json") for d in sorted(os.listdir(folder))]
    results = []
    for path in filter(os.path.isfile, paths):
        result = read_json(path)
        if not (isinstance(result, dict) and {"args", "provenance", "batches"} <= result.keys()):
            raise UserError(f"{path}: not a speed_ratio.py result (needs args, provenance and batches)")
        results.append(result)
    if not results:
        raise UserError(f"{folder}: no speed_ratio.json in its subfolders (run speed_ratio.py --output_dir {folder}/NAME)")
    return results


def pair_name(args: dict) -> str:
    """``other / base``, the shared model or backend said once."""
    (bm, bb), (om, ob) = (args["base"].split(":"), args["other"].split(":"))
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


@cli
def main(argv: list[str] | None = None) -> str:
    """Write and print the table; returns it."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", help="the runs' parent folder, e.g. runs/speed_ratios")
    args = parser.parse_args(argv)
    text = table(collect(args.folder))
    write_text(os.path.join(args.folder, "ratios.md"), text)
    print(text, end="")
    return text


if __name__ == "__main__":
    main()
