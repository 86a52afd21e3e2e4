"""common/hardware.py: the peak rates per instruction set, and the CLI the bash scripts test for bf16."""
import json
import subprocess
import sys

import pytest
from conftest import REPO, user_error

from common import hardware

AVX2 = {"fma", "avx2"}
AVX512 = AVX2 | set(hardware.ONEDNN_BF16_FLAGS)


def _cli(*argv: str) -> subprocess.CompletedProcess:
    """``python -m common.hardware *argv`` in a fresh process, as the bash scripts run it."""
    return subprocess.run([sys.executable, "-m", "common.hardware", *argv], capture_output=True, text=True, cwd=REPO)


def _fake_cpu(monkeypatch, flags: set[str], mhz: float = 2000.0, boost: float | None = None,
              vendor: str = "GenuineIntel", family: int = 6) -> None:
    monkeypatch.setattr(hardware, "_cpuinfo", lambda: hardware.CpuId("Fake CPU", flags, mhz, vendor, family))
    monkeypatch.setattr(hardware, "_max_ghz", lambda: boost)


@pytest.mark.parametrize("flags, vendor, family, fp32, bf16", [
    (AVX2, "GenuineIntel", 6, 32, 32),
    (AVX2, "AuthenticAMD", 25, 32, 32),  # Zen 3
    (AVX512, "GenuineIntel", 6, 64, 64),
    (AVX512 | {"avx512_bf16"}, "GenuineIntel", 6, 64, 128),
    (AVX512 | {"avx512_bf16"}, "AuthenticAMD", 25, 32, 64),  # Zen 4: 512-bit operations on 256-bit units
    (AVX512 | {"avx512_bf16"}, "AuthenticAMD", 26, 64, 128),  # Zen 5
    (AVX512 | {"avx512_bf16", "amx_bf16"}, "GenuineIntel", 6, 64, 1024),
])
def test_peaks_per_instruction_set(monkeypatch, flags, vendor, family, fp32, bf16):
    _fake_cpu(monkeypatch, flags, vendor=vendor, family=family)
    info = hardware.cpu_info(threads=2, ghz=3.0)
    assert (info["fp32_flop_per_cycle_core"], info["bf16_flop_per_cycle_core"]) == (fp32, bf16)
    assert info["peak_fp32_gflops"] == 2 * fp32 * 3.0 and info["peak_bf16_gflops"] == 2 * bf16 * 3.0
    assert info["assumptions"][0] == "clock 3.00 GHz (given)"


def test_clock_source(monkeypatch):
    _fake_cpu(monkeypatch, AVX2, mhz=2450.0)
    assert hardware.cpu_info(1)["ghz"] == 2.45
    assert hardware.cpu_info(1)["assumptions"][0].endswith("(/proc/cpuinfo cpu MHz: nominal, turbo not counted)")
    _fake_cpu(monkeypatch, AVX2, mhz=2450.0, boost=3.7)
    assert hardware.cpu_info(1)["ghz"] == 3.7


def test_real_cpuinfo_is_read():
    cpu = hardware._cpuinfo()
    assert cpu.flags == hardware.cpu_flags() and cpu.flags and hardware.cpu_info(1)["ghz"] > 0
    assert cpu.vendor in ("GenuineIntel", "AuthenticAMD") and cpu.family > 0


def test_zen4_assumption_is_written(monkeypatch):
    _fake_cpu(monkeypatch, AVX512 | {"avx512_bf16"}, vendor="AuthenticAMD", family=25)
    assert hardware.cpu_info(1, 3.0)["assumptions"][1] == \
        "fp32: AVX-512 on 256-bit units (Zen 4), 2 FMA units, 32 FLOP/cycle/core"


def test_cli_onednn_bf16(monkeypatch, capsys):
    _fake_cpu(monkeypatch, AVX2 | {"avx512f", "avx512vl"})
    assert hardware.main(["--onednn_bf16"]) == 1
    assert capsys.readouterr().out == "no bf16 for paddle's oneDNN kernels on this CPU (it lacks avx512bw, avx512dq)\n"
    _fake_cpu(monkeypatch, AVX512)
    assert hardware.main(["--onednn_bf16"]) == 0
    assert capsys.readouterr().out == ""


def test_cli_in_a_process_follows_this_cpu():
    """What the bash scripts run: the exit status says whether paddle's bf16 kernels run here."""
    proc = _cli("--onednn_bf16")
    missing = hardware.onednn_bf16_missing()
    assert proc.returncode == (1 if missing else 0), proc.stderr
    assert (", ".join(missing) in proc.stdout) if missing else proc.stdout == ""


def test_cli_peaks_json(monkeypatch, capsys):
    _fake_cpu(monkeypatch, AVX2)
    assert hardware.main(["--threads", "2", "--ghz", "2.5"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["peak_fp32_gflops"] == 160.0 and info["threads"] == 2


@pytest.mark.parametrize("argv", [["--threads", "0"], ["--ghz", "-1"]])
def test_cli_bad_input(argv):
    assert user_error(_cli(*argv)) == "--threads must be >= 1 and --ghz > 0"
