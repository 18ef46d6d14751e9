"""The native build: fasttrack._C compiles with nvcc, the kernels' device code runs under host
emulation, fasttrack._ext reports coherently, and setup.py honours FASTTRACK_BUILD_CUDA.

No GPU is needed: the compile tests need nvcc (skipped, with the reason, where it is absent) and
the emulation test a host C++20 compiler plus the CUDA headers.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _load_setup():
    # setup.py runs setup() only as a script, so importing it just defines its helpers.
    spec = importlib.util.spec_from_file_location("fasttrack_setup_under_test", ROOT / "setup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SETUP = _load_setup()
NVCC = SETUP.find_nvcc(os.environ)
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc not found (no CUDA toolkit): cannot compile csrc/")


def _cuda_include() -> Path | None:
    cands = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    if NVCC:
        cands.append(str(Path(NVCC).resolve().parents[1]))
    for c in cands:
        if c and (Path(c) / "include" / "cuda_fp16.h").is_file():
            return Path(c) / "include"
    return None


# ------------------------------------------------------------------ (a) nvcc builds the extension
_PROBE = r"""
import importlib.util, sys
spec = importlib.util.spec_from_file_location("_C", sys.argv[1])
m = importlib.util.module_from_spec(spec)
spec.loader.exec_module(m)
want = {"lse_fwd", "attention_fwd", "self_cross_fwd", "cross_attention_fwd", "cross_attention_max_nk",
        "cuda_status", "build_info"}
assert want <= set(dir(m)), sorted(want - set(dir(m)))
count, err = m.cuda_status()
assert isinstance(count, int) and isinstance(err, str) and (count > 0 or err), (count, err)
assert "archs=" + sys.argv[2] in m.build_info(), m.build_info()
s4, s3 = [1, 1, 1, 1], [1, 1, 1]
try:  # argument checks run before any CUDA call, so they work without a GPU
    m.attention_fwd(q=1, k=1, v=1, out=1, lse=1, B=1, H=1, Nq=1, Nk=1, D=200, Dv=64, q_stride=s4,
                    k_stride=s4, v_stride=s4, out_stride=s4, lse_stride=s3, scale=0.1, dtype=0,
                    device=0, stream=0)
except ValueError as e:
    assert "'D' = 200" in str(e), e
else:
    raise AssertionError("D = 200 was accepted")
try:
    m.self_cross_fwd(q=1, k=1, cross=1, lse=1, out=1, B=1, H=1, Nq=1, Nk=1, D=64, T=300, q_stride=s4,
                     k_stride=s4, cross_stride=s3, lse_stride=s3, out_stride=s3, scale=0.1, dtype=0,
                     device=0, stream=0)
except ValueError as e:
    assert "'T' = 300" in str(e), e
else:
    raise AssertionError("T = 300 was accepted")
print("probe ok")
"""


@needs_nvcc
@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake not on PATH: cannot configure csrc/")
def test_extension_compiles_with_nvcc(tmp_path):
    """The extension nvcc built: the one `pip install` made when it is there (CI installs with
    nvcc on the PATH, so that build is the compile check), else a CMake configure + build of
    csrc/ for sm_80 with warnings as errors. Then import the module (no GPU needed) and check its
    functions, argument checks and link dependencies."""
    spec = importlib.util.find_spec("fasttrack._C")
    if spec is not None and spec.origin:
        built, archs = [Path(spec.origin)], ""
    else:
        built, archs = _build_sm80(tmp_path), "80"
    res = subprocess.run([sys.executable, "-c", _PROBE, str(built[0]), archs], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0 and "probe ok" in res.stdout, res.stdout + res.stderr

    if shutil.which("readelf"):
        needed = subprocess.run(["readelf", "-d", str(built[0])], capture_output=True, text=True).stdout
        for lib in ("libtorch", "libc10", "libcudart.so"):
            assert lib not in needed, f"_C must not link {lib} (static CUDA runtime, no libtorch):\n{needed}"


def _build_sm80(tmp_path):
    pytest.importorskip("pybind11", reason="pybind11 (a build requirement) is not installed")
    out_dir, build_dir = tmp_path / "out", tmp_path / "build"
    env = dict(os.environ, FASTTRACK_CUDA_ARCHS="80", FASTTRACK_WERROR="1")
    args = SETUP.cmake_args(str(out_dir), NVCC, env)
    run = lambda cmd: subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500)
    res = run(["cmake", "-S", str(ROOT), "-B", str(build_dir)] + args)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    res = run(["cmake", "--build", str(build_dir), "--parallel", "2"])
    assert res.returncode == 0, res.stdout[-8000:] + res.stderr[-4000:]
    built = list(out_dir.glob("_C*.so")) + list(out_dir.glob("_C*.pyd"))
    assert len(built) == 1, f"expected one _C module in {out_dir}, found {built}"
    return built


# ------------------------------------------------------------------ device code under host emulation
@needs_nvcc
@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ not found: cannot build the host emulation")
@pytest.mark.parametrize("sanitizer", ["address,undefined", "thread"])
def test_kernels_under_host_emulation(tmp_path, sanitizer):
    """csrc/emulation runs each forward kernel's device code on CPU threads (one per CUDA thread)
    against float64 references at odd sizes: AddressSanitizer stands in for memcheck, and
    ThreadSanitizer, which sees __syncthreads as barriers, for racecheck."""
    include = _cuda_include()
    if include is None:
        pytest.skip("CUDA headers (cuda_fp16.h) not found next to nvcc, CUDA_HOME or /usr/local/cuda")
    exe = tmp_path / "emulate"
    cmd = ["g++", "-std=c++20", "-O1", "-g", f"-fsanitize={sanitizer}", "-fno-sanitize-recover=all",
           "-Wno-unknown-pragmas", "-Wno-attributes", f"-I{include}", f"-I{ROOT / 'csrc'}",
           str(ROOT / "csrc" / "emulation" / "emulate_kernels.cpp"), "-o", str(exe), "-lpthread"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    assert res.returncode == 0, res.stderr[-6000:]
    env = dict(os.environ, TSAN_OPTIONS="halt_on_error=1", ASAN_OPTIONS="detect_leaks=0")
    res = subprocess.run([str(exe)], capture_output=True, text=True, timeout=900, env=env)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-6000:]
    assert "all emulated kernels match" in res.stdout
    assert "WARNING: ThreadSanitizer" not in res.stderr, res.stderr[-6000:]


# ------------------------------------------------------------------ (b) soft import
def test_ext_reports_coherently():
    from fasttrack import _ext

    assert isinstance(_ext.HAS_CUDA_EXT, bool)
    if _ext.HAS_CUDA_EXT:
        assert _ext.CUDA_EXT_ERROR is None and _ext.CUDA_EXT is not None
        count, err = _ext.CUDA_EXT.cuda_status()
        assert count > 0 and err == ""
        return
    err = _ext.CUDA_EXT_ERROR
    assert isinstance(err, str) and err
    if importlib.util.find_spec("fasttrack._C") is None:
        assert err == _ext.NOT_BUILT and _ext.CUDA_EXT is None
    else:
        assert err.startswith(("fasttrack._C failed to import", "built but no CUDA device/driver")), err


def test_ext_probe_cases(monkeypatch):
    from fasttrack import _ext

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a, **k: None)
    assert _ext._probe() == (None, False, _ext.NOT_BUILT)

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a, **k: object())

    def broken(name, *a, **k):
        raise ImportError("undefined symbol: cudaLaunchKernel")

    monkeypatch.setattr(importlib, "import_module", broken)
    mod, ok, err = _ext._probe()
    assert mod is None and not ok and "undefined symbol: cudaLaunchKernel" in err

    fake = types.SimpleNamespace(cuda_status=lambda: (0, "cudaErrorNoDevice: no CUDA-capable device is detected"))
    monkeypatch.setattr(importlib, "import_module", lambda name, *a, **k: fake)
    mod, ok, err = _ext._probe()
    assert mod is fake and not ok
    assert err == "built but no CUDA device/driver (cudaErrorNoDevice: no CUDA-capable device is detected)"

    fake.cuda_status = lambda: (2, "")
    assert _ext._probe() == (fake, True, None)


# ------------------------------------------------------------------ (c) FASTTRACK_BUILD_CUDA
def test_build_decision():
    no_nvcc = dict(which=lambda name: None, defaults=())
    skip = SETUP.cuda_build_decision({"FASTTRACK_BUILD_CUDA": "0"})
    assert skip.action == "skip" and "FASTTRACK_BUILD_CUDA=0" in skip.reason
    assert SETUP.cuda_build_decision({"FASTTRACK_BUILD_CUDA": "off"}).action == "skip"
    missing = SETUP.cuda_build_decision({}, **no_nvcc)
    assert missing.action == "skip" and "nvcc" in missing.reason
    forced = SETUP.cuda_build_decision({"FASTTRACK_BUILD_CUDA": "1"}, **no_nvcc)
    assert forced.action == "error" and "nvcc" in forced.reason
    assert SETUP.cuda_build_decision({"FASTTRACK_BUILD_CUDA": "maybe"}).action == "error"
    found = SETUP.cuda_build_decision({}, which=lambda name: "/opt/cuda/bin/nvcc", defaults=())
    assert found == ("build", "nvcc found: /opt/cuda/bin/nvcc", "/opt/cuda/bin/nvcc")
    forced = SETUP.cuda_build_decision({"FASTTRACK_BUILD_CUDA": "1"}, which=lambda name: "/x/nvcc", defaults=())
    assert forced.action == "build" and forced.nvcc == "/x/nvcc"


def test_cmake_args_follow_environment():
    args = SETUP.cmake_args("/tmp/out", "/x/nvcc", {"FASTTRACK_CUDA_ARCHS": "90a", "FASTTRACK_WERROR": "1"})
    assert "-DCMAKE_CUDA_ARCHITECTURES=90a" in args and "-DFASTTRACK_WERROR=ON" in args
    assert "-DFASTTRACK_OUTPUT_DIR=/tmp/out" in args and "-DCMAKE_CUDA_COMPILER=/x/nvcc" in args
    assert not any(a.startswith("-DCMAKE_CUDA_ARCHITECTURES") for a in SETUP.cmake_args("/o", "/x/nvcc", {}))


# ------------------------------------------------------------------ the backend's reasons
def test_cuda_backend_reasons(monkeypatch):
    from fasttrack.ops import cuda_backend as cb

    q = torch.randn(1, 2, 5, 8)
    if not cb.HAS_CUDA_EXT:
        (why,) = cb.reasons("attention", q, q, q)
        assert cb.CUDA_EXT_ERROR in why
    monkeypatch.setattr(cb, "HAS_CUDA_EXT", True)
    assert any("CUDA tensors" in r for r in cb.reasons("attention", q, q, q))
    assert any("float64" in r for r in cb.reasons("attention", q.double(), q.double(), q.double()))
    wide = torch.randn(1, 2, 5, 160)
    assert any("D=160" in r for r in cb.reasons("lse", wide, wide))
    assert any("Dv=200" in r for r in cb.reasons("attention", q, q, torch.randn(1, 2, 5, 200)))
    assert any("T=300" in r for r in cb.reasons("self_cross", q, q, torch.randn(1, 5, 300)))
    assert any("no op" in r for r in cb.reasons("box_filter", q, q))
    assert all(r.startswith("backward on the Triton backend") for r in cb.reasons("attention_bwd", q, q, q))
