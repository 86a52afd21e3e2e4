"""Process-wide settings that ``import common`` makes before paddle loads."""
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHOW = "import os, common; print(os.environ.get('MKL_DEBUG_CPU_TYPE'))"


def _run(env: dict) -> str:
    return subprocess.run([sys.executable, "-c", SHOW], env=env, cwd=REPO, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_mkl_avx2_kernels_selected_on_amd_unless_the_user_chose():
    env = {k: v for k, v in os.environ.items() if k != "MKL_DEBUG_CPU_TYPE"}
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        amd = "AuthenticAMD" in f.read()
    assert _run(env) == ("5" if amd else "None")
    assert _run(env | {"MKL_DEBUG_CPU_TYPE": "4"}) == "4"


STATIC_RUN = """
import numpy as np, common, paddle
paddle.enable_static()
x = paddle.static.data("x", [1], "float32")
exe = paddle.static.Executor(paddle.CPUPlace())
print(exe.run(feed={"x": np.ones(1, "float32")}, fetch_list=[x * 2])[0])
"""


def test_paddles_info_log_lines_are_off_unless_asked_for():
    """A static executor run logs "New Executor is Running" at glog's INFO level: silent by default."""
    env = {k: v for k, v in os.environ.items() if k != "GLOG_minloglevel"}
    outputs = [subprocess.run([sys.executable, "-c", STATIC_RUN], env=e, cwd=REPO, capture_output=True, text=True,
                              check=True) for e in (env, env | {"GLOG_minloglevel": "0"})]
    assert all(out.stdout.strip() == "[2.]" for out in outputs)
    assert "New Executor is Running" not in outputs[0].stderr
    assert "New Executor is Running" in outputs[1].stderr


def test_zlib_users_work_after_paddle():
    """The zlib crash the import order prevents: gzip after paddle, in one process."""
    code = "import common, paddle, gzip; print(len(gzip.compress(b'x' * 1000)) < 100)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip().endswith("True")


def _dnnl_openmp(imports: str) -> str:
    """The library that paddle's oneDNN calls ``GOMP_parallel`` in, after ``imports`` (glibc's LD_DEBUG)."""
    import glob
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        env = os.environ | {"LD_DEBUG": "bindings", "LD_DEBUG_OUTPUT": os.path.join(tmp, "ld"), "LD_BIND_NOW": "1"}
        subprocess.run([sys.executable, "-c", imports], env=env, cwd=REPO, capture_output=True, check=True)
        lines = [line for path in glob.glob(os.path.join(tmp, "ld*")) for line in open(path, encoding="utf-8")]
    hits = [line.split(" to ")[1].split()[0] for line in lines
            if "libdnnl" in line.split(" to ")[0] and "`GOMP_parallel'" in line]
    assert hits, f"no binding of oneDNN's GOMP_parallel after {imports!r}"
    return os.path.basename(hits[0])


def test_paddle_keeps_its_own_openmp_when_torch_follows():
    """torch first puts its libgomp under paddle's oneDNN (the slowdown ``common`` prevents)."""
    assert _dnnl_openmp("import torch, paddle") == "libgomp.so.1"
    assert _dnnl_openmp("import common, torch") == "libiomp5.so"
