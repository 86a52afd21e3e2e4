"""The CPU's peak FLOP rates, from /proc/cpuinfo, with the assumptions written down."""
from __future__ import annotations

import platform


def _cpuinfo() -> tuple[str, set[str], float | None]:
    """(model name, flags, MHz) of the first processor listed in /proc/cpuinfo."""
    name, flags, mhz = platform.processor(), set(), None
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            key, _, value = (part.strip() for part in line.partition(":"))
            if not line.strip():
                break  # end of the first processor
            if key == "model name":
                name = value
            elif key == "flags":
                flags = set(value.split())
            elif key == "cpu MHz":
                mhz = float(value)
    return name, flags, mhz


def cpu_flags() -> set[str]:
    """The CPU's feature flags (/proc/cpuinfo)."""
    return _cpuinfo()[1]


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

    fp32: 2 FMA units x SIMD lanes x 2 FLOPs (AVX-512: 64 FLOP/cycle/core, AVX2: 32).
    bf16: AMX tiles where present (1024 FLOP/cycle/core, Intel's Sapphire Rapids figure), else
    AVX512-BF16 dot products (2 bf16 pairs per fp32 lane: twice fp32), else the fp32 rate.
    """
    name, flags, mhz = _cpuinfo()
    fp32 = 64 if "avx512f" in flags else 32 if "fma" in flags else 8
    if "amx_bf16" in flags:
        bf16, bf16_how = 1024, "AMX-BF16 tiles, 1024 FLOP/cycle/core (Intel's Sapphire Rapids figure)"
    elif "avx512_bf16" in flags:
        bf16, bf16_how = 2 * fp32, f"no AMX; AVX512-BF16 VDPBF16PS on 2 FMA units, {2 * fp32} FLOP/cycle/core"
    else:
        bf16, bf16_how = fp32, "no bf16 instructions: the fp32 rate at best"
    boost = _max_ghz()
    clock = ghz or boost or (mhz or 0.0) / 1000
    source = "given" if ghz else "cpufreq maximum" if boost else "/proc/cpuinfo cpu MHz: nominal, turbo not counted"
    simd = {64: "AVX-512", 32: "AVX2"}.get(fp32, "SSE")
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
