"""One table of the operator profiles in a folder: each subfolder an ``op_profile.py`` run.

Per profile (model, backend, batch size): the operators' time per run, the matmul-type operators' share and
FLOP rate, and the operator types taking the most time with their ms per run. Also the CPU, the commits and the
settings the runs recorded. Writes ``profiles.md`` in the folder and prints it.
"""
from __future__ import annotations

import argparse
import os

from common.errors import cli
from common.fsutil import read_json, read_runs, write_text

TOP = 4  # operator types named per profile


def collect(folder: str) -> list[tuple[dict, dict]]:
    """(args, result) of every ``op_profile.py`` run in ``folder``'s subfolders, by subfolder name."""
    runs = read_runs(folder, "op_profile.json", ("ops", "total_ms_per_run", "provenance"), "op_profile.py")
    return [(read_json(os.path.join(run, "args.json")), result) for run, result in runs]


def table(runs: list[tuple[dict, dict]]) -> str:
    """The markdown table of ``runs`` (see the module docstring)."""
    settings = sorted({(a["seq_len"], a["warmup"], a["runs"], a["threads"]) for a, _ in runs})
    lines = ["# Operator profiles", "",
             "CPU: " + "; ".join(sorted({r["provenance"]["cpu"] for _, r in runs})) + ". Code: "
             + ", ".join(sorted({r["provenance"]["code"] for _, r in runs})) + ". Seq, untimed runs, profiled runs, "
             "threads: " + "; ".join(" / ".join(map(str, s)) for s in settings) + ".", "",
             "ms: the operators' time per run (profiled runs' mean); matmul-type: the operators holding the model's "
             "GEMMs (op_profile.py), their share of that time and the FLOP rate of the exported model's matmuls "
             "over it.", "",
             "| model | backend | batch | ms | matmul-type | GFLOP/s | most time (ms per run) |",
             "|---|---|---:|---:|---:|---:|---|"]
    def backend(args: dict) -> str:
        return args["backend"] + (", unfused" if args.get("no_fuse_blocks") else "")

    for args, r in sorted(runs, key=lambda run: (run[0]["model"], backend(run[0]), run[0]["batch_size"])):
        ops = sorted(r["ops"].items(), key=lambda item: item[1]["ms_per_run"], reverse=True)[:TOP]
        top = ", ".join(f"{op} {v['ms_per_run']:.2f}" for op, v in ops)
        rate = f"{r['matmul_gflop_per_s']:.0f}" if r.get("matmul_gflop_per_s") else "–"
        lines.append(f"| {args['model']} | {backend(args)} | {args['batch_size']} | {r['total_ms_per_run']:.1f} | "
                     f"{r['matmul_percent']:.1f} % | {rate} | {top} |")
    return "\n".join(lines) + "\n"


@cli
def main(argv: list[str] | None = None) -> str:
    """Write and print the table; returns it."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", help="the profiles' parent folder, e.g. runs/op_profiles")
    args = parser.parse_args(argv)
    text = table(collect(args.folder))
    write_text(os.path.join(args.folder, "profiles.md"), text)
    print(text, end="")
    return text


if __name__ == "__main__":
    main()
