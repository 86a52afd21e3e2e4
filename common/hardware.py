"""The CPU's peak FLOP rates, from /proc/cpuinfo, with the assumptions written down."""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from typing import NamedTuple

from common.errors import UserError, cli


class CpuId(NamedTuple):
    """What /proc/cpuinfo says of the first processor."""
    name: str
    flags: set[str]
    mhz: float | None
    vendor: str = ""
    family: int | None = None


def _cpuinfo() -> CpuId:
    """The first processor listed in /proc/cpuinfo."""
    fields = {}
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                break  # end of the first processor
            key, _, value = (part.strip() for part in line.partition(":"))
            fields[key] = value
    return CpuId(fields.get("model name", platform.processor()), set(fields.get("flags", "").split()),
                 float(fields["cpu MHz"]) if "cpu MHz" in fields else None, fields.get("vendor_id", ""),
                 int(fields["cpu family"]) if "cpu family" in fields else None)


def cpu_flags() -> set[str]:
    """The CPU's feature flags (/proc/cpuinfo)."""
    return _cpuinfo().flags


def _halves_512bit(cpu: CpuId) -> bool:
    """AMD Zen 4 (family 25 with AVX-512) runs each 512-bit operation on two 256-bit units: AVX-512 does not
    raise its FLOP rate over AVX2's (measured on an EPYC: 31 fp32 FLOP/cycle/core with zmm or ymm FMAs)."""
    return cpu.vendor == "AuthenticAMD" and cpu.family == 25 and "avx512f" in cpu.flags


# oneDNN's avx512_core: paddle.inference's bfloat16 switch does nothing on a CPU without it.
ONEDNN_BF16_FLAGS = ("avx512f", "avx512bw", "avx512vl", "avx512dq")


def onednn_bf16_missing() -> list[str]:
    """The CPU flags that paddle's oneDNN bfloat16 kernels need and this CPU lacks (empty: supported)."""
    flags = cpu_flags()
    return [f for f in ONEDNN_BF16_FLAGS if f not in flags]


def _max_ghz() -> float | None:
    """The highest clock the kernel reports (cpufreq's cpuinfo_max_freq: the boost clock); None in most VMs."""
    try:
        with open("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq", encoding="utf-8") as f:
            return int(f.read()) / 1e6
    except (OSError, ValueError):
        return None


def cpu_info(threads: int, ghz: float | None = None) -> dict:
    """Peak fp32 / bf16 GFLOP/s of ``threads`` cores at ``ghz`` (default: cpufreq's maximum clock,
    else /proc/cpuinfo's cpu MHz, which in a VM is the nominal clock and turbo is not counted).

    fp32: 2 FMA units x SIMD lanes x 2 FLOPs (AVX-512: 64 FLOP/cycle/core, AVX2 and Zen 4's AVX-512: 32).
    bf16: AMX tiles where present (1024 FLOP/cycle/core, Intel's Sapphire Rapids figure), else
    AVX512-BF16 dot products (2 bf16 pairs per fp32 lane: twice fp32), else the fp32 rate.
    """
    cpu = _cpuinfo()
    name, flags, mhz = cpu.name, cpu.flags, cpu.mhz
    halves = _halves_512bit(cpu)
    fp32 = 64 if "avx512f" in flags and not halves else 32 if "fma" in flags else 8
    if "amx_bf16" in flags:
        bf16, bf16_how = 1024, "AMX-BF16 tiles, 1024 FLOP/cycle/core (Intel's Sapphire Rapids figure)"
    elif "avx512_bf16" in flags:
        bf16, bf16_how = 2 * fp32, f"no AMX; AVX512-BF16 VDPBF16PS on 2 FMA units, {2 * fp32} FLOP/cycle/core"
    else:
        bf16, bf16_how = fp32, "no bf16 instructions: the fp32 rate at best"
    boost = _max_ghz()
    clock = ghz or boost or (mhz or 0.0) / 1000
    source = "given" if ghz else "cpufreq maximum" if boost else "/proc/cpuinfo cpu MHz: nominal, turbo not counted"
    simd = "AVX-512 on 256-bit units (Zen 4)" if halves else {64: "AVX-512", 32: "AVX2"}.get(fp32, "SSE")
    return {
        "cpu": name,
        "threads": threads,
        "ghz": clock,
        "fp32_flop_per_cycle_core": fp32,
        "bf16_flop_per_cycle_core": bf16,
        "peak_fp32_gflops": threads * fp32 * clock,
        "peak_bf16_gflops": threads * bf16 * clock,
        "assumptions": [
            f"clock {clock:.2f} GHz ({source})",
            f"fp32: {simd}, 2 FMA units, {fp32} FLOP/cycle/core",
            f"bf16: {bf16_how}",
            "one thread per physical core",
        ],
    }


@cli
def main(argv: list[str] | None = None) -> int:
    """``python -m common.hardware``: this CPU's peaks as JSON, or (``--onednn_bf16``) whether
    paddle's oneDNN bfloat16 kernels run here, as the exit status the bash scripts test."""
    parser = argparse.ArgumentParser(prog="python -m common.hardware", description=__doc__)
    parser.add_argument("--onednn_bf16", action="store_true",
                        help="print nothing and exit 0 if paddle's oneDNN bf16 kernels run on this CPU; "
                             "else exit 1, naming the missing CPU flags")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                        help="cores for the peaks (default: all this process may use, as the benchmark)")
    parser.add_argument("--ghz", type=float, help="clock for the peaks (default: see cpu_info)")
    args = parser.parse_args(argv)
    if args.threads < 1 or (args.ghz is not None and args.ghz <= 0):
        raise UserError("--threads must be >= 1 and --ghz > 0")
    if not args.onednn_bf16:
        print(json.dumps(cpu_info(args.threads, args.ghz), indent=2))
        return 0
    missing = onednn_bf16_missing()
    if missing:
        print(f"no bf16 for paddle's oneDNN kernels on this CPU (it lacks {', '.join(missing)})")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
