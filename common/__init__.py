"""Shared machinery for the compact-BERT reproductions.

Every entry point imports ``common`` before ``paddle``, so the process-wide settings that must
precede paddle's native libraries live here, once:

- Paddle 2.6.2 exports zlib symbols of its own: ``zlib`` must be loaded before ``paddle`` or the
  first zlib user (scipy, gzip, aiohttp) crashes the process.
- Paddle's dygraph GEMMs are MKL's (``libmklml_intel.so``, an MKL of 2019), which on AMD CPUs
  dispatches to its generic SSE path: about 3x slower than its AVX2 one on this repo's Zen 5
  machine. ``MKL_DEBUG_CPU_TYPE=5`` selects the AVX2 kernels (this MKL still honours it; torch's
  newer MKL ignores it and is fast anyway). Set only on AMD and only when the user has not set it.
- ``paddle`` is imported here, before anything can import ``torch``. torch loads its libgomp into the
  global symbol scope; a paddle loaded after it then runs oneDNN's parallel regions on that GNU
  OpenMP and its own loops and MKL on Intel's libiomp5: two thread pools on the same cores. On a
  2-core Zen 4, paddle.inference's BERT-base at batch 1 took 179-192 ms that way, 130-135 ms with
  paddle first (results/README.md, "Why targets are missed").
- paddle's C++ INFO log lines (glog) are off unless ``GLOG_minloglevel`` is set: saving an export runs a
  static executor that announces itself and re-registers each of this repo's operators, two dozen lines
  per export. Warnings and errors still print; ``GLOG_minloglevel=0`` brings the INFO lines back.
"""
import os
import sys
import warnings
import zlib  # noqa: F401  (must precede any paddle import)


def _is_amd() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return any(line.startswith("vendor_id") and "AuthenticAMD" in line for line in f)
    except OSError:
        return False


if _is_amd():
    os.environ.setdefault("MKL_DEBUG_CPU_TYPE", "5")
os.environ.setdefault("GLOG_minloglevel", "1")  # read when paddle's native library loads

# Import-time noise from the pinned stack (jieba's pkg_resources, setuptools' distutils shim).
warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
warnings.filterwarnings("ignore", message="Setuptools is replacing distutils")

if "torch" in sys.modules and "paddle" not in sys.modules:
    warnings.warn("torch was imported before common: paddle's oneDNN will share torch's OpenMP runtime "
                  "and run slower; import common first", RuntimeWarning, stacklevel=2)
import paddle  # noqa: E402,F401  (before torch: one OpenMP runtime for all of paddle)
