"""Build script: the Python package always, the CUDA extension fasttrack._C when possible.

Project metadata lives in pyproject.toml. This file adds what pyproject.toml cannot say:
- packages: fasttrack* plus the repo-root kernels/ directory installed as fasttrack.kernels;
- the CMake-built extension fasttrack._C (csrc/, CMakeLists.txt), decided by
  `cuda_build_decision()`:
    FASTTRACK_BUILD_CUDA=0          -> skip: pure-Python install (Triton and torch backends)
    FASTTRACK_BUILD_CUDA=1          -> build, and fail loudly when nvcc is missing
    unset / "auto"                  -> build when nvcc is found, else skip
  FASTTRACK_CUDA_ARCHS overrides the target GPUs (default "80;90"); MAX_JOBS or
  CMAKE_BUILD_PARALLEL_LEVEL the build parallelism (default 2).

The decision is importable without running setup() (tests/test_build.py does so): setup() only
runs when this file is executed as a script, which is how pip and setuptools run it.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable, Mapping, NamedTuple, Optional

ROOT = Path(__file__).resolve().parent
_OFF = ("0", "false", "no", "off")
_ON = ("1", "true", "yes", "on")


class BuildDecision(NamedTuple):
    action: str              # "build", "skip" or "error"
    reason: str              # one line for the user
    nvcc: Optional[str]      # path of the nvcc that will build, when action == "build"


_DEFAULT_NVCC = ("/usr/local/cuda/bin/nvcc",)


def find_nvcc(env: Mapping[str, str], which: Callable[[str], Optional[str]] = shutil.which,
              defaults: tuple[str, ...] = _DEFAULT_NVCC) -> Optional[str]:
    """nvcc from CUDA_HOME / CUDA_PATH, else from PATH, else the usual install location."""
    for var in ("CUDA_HOME", "CUDA_PATH"):
        home = env.get(var)
        if home and os.path.isfile(os.path.join(home, "bin", "nvcc")):
            return os.path.join(home, "bin", "nvcc")
    found = which("nvcc")
    if found:
        return found
    return next((p for p in defaults if os.path.isfile(p)), None)


def cuda_build_decision(env: Optional[Mapping[str, str]] = None,
                        which: Callable[[str], Optional[str]] = shutil.which,
                        defaults: tuple[str, ...] = _DEFAULT_NVCC) -> BuildDecision:
    """Whether to build fasttrack._C, from FASTTRACK_BUILD_CUDA and the presence of nvcc
    (`which` and `defaults` locate it; tests replace them)."""
    env = os.environ if env is None else env
    flag = env.get("FASTTRACK_BUILD_CUDA", "").strip().lower()
    if flag in _OFF:
        return BuildDecision("skip", "FASTTRACK_BUILD_CUDA=0", None)
    if flag not in _ON and flag not in ("", "auto"):
        return BuildDecision("error", f"FASTTRACK_BUILD_CUDA={flag!r} must be 0, 1 or auto", None)
    nvcc = find_nvcc(env, which, defaults)
    if nvcc is None:
        if flag in _ON:
            return BuildDecision("error", "FASTTRACK_BUILD_CUDA=1 but nvcc was not found "
                                 "(put it on PATH or set CUDA_HOME)", None)
        return BuildDecision("skip", "no nvcc found (set CUDA_HOME or FASTTRACK_BUILD_CUDA=1 to build it)", None)
    why = "FASTTRACK_BUILD_CUDA=1" if flag in _ON else "nvcc found"
    return BuildDecision("build", f"{why}: {nvcc}", nvcc)


def cmake_args(extdir: str, nvcc: str, env: Mapping[str, str]) -> list[str]:
    """CMake configure arguments for building _C into `extdir`."""
    import pybind11

    args = [
        f"-DFASTTRACK_OUTPUT_DIR={extdir}",
        f"-DCMAKE_CUDA_COMPILER={nvcc}",
        f"-DPython_EXECUTABLE={sys.executable}",
        f"-DPYTHON_EXECUTABLE={sys.executable}",
        f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
        f"-DCMAKE_BUILD_TYPE={env.get('FASTTRACK_BUILD_TYPE', 'Release')}",
    ]
    archs = env.get("FASTTRACK_CUDA_ARCHS", "").strip()
    if archs:
        args.append(f"-DCMAKE_CUDA_ARCHITECTURES={archs}")
    if env.get("FASTTRACK_WERROR", "").strip().lower() in _ON:
        args.append("-DFASTTRACK_WERROR=ON")
    if shutil.which("ninja"):
        args += ["-G", "Ninja"]
    return args


def _setup() -> None:
    from setuptools import Extension, find_packages, setup
    from setuptools.command.build_ext import build_ext

    class CMakeExtension(Extension):
        def __init__(self, name: str) -> None:
            super().__init__(name, sources=[])

    class CMakeBuild(build_ext):
        def build_extension(self, ext: Extension) -> None:
            decision = cuda_build_decision()
            if shutil.which("cmake") is None:
                raise RuntimeError("fasttrack: building the CUDA extension needs cmake >= 3.18 on PATH "
                                   "(or install with FASTTRACK_BUILD_CUDA=0 for the pure-Python package)")
            # get_ext_fullpath honours --inplace; editable installs copy the result into
            # fasttrack/ next to the sources, where `from fasttrack import _C` finds it.
            extdir = os.path.dirname(os.path.abspath(self.get_ext_fullpath(ext.name)))
            build_dir = Path(self.build_temp).resolve() / "cmake"
            build_dir.mkdir(parents=True, exist_ok=True)
            env = dict(os.environ)
            jobs = env.get("MAX_JOBS") or env.get("CMAKE_BUILD_PARALLEL_LEVEL") or "2"
            try:
                subprocess.run(["cmake", "-S", str(ROOT), "-B", str(build_dir)]
                               + cmake_args(extdir, decision.nvcc, env), check=True, env=env)
                subprocess.run(["cmake", "--build", str(build_dir), "--parallel", jobs],
                               check=True, env=env)
            except subprocess.CalledProcessError as e:
                raise RuntimeError(f"fasttrack: building the CUDA extension failed ({e}); see the "
                                   "compiler output above, or install with FASTTRACK_BUILD_CUDA=0 "
                                   "for the pure-Python package") from e

    decision = cuda_build_decision()
    if decision.action == "error":
        raise SystemExit(f"fasttrack: {decision.reason}")
    metadata_only = any(a in ("egg_info", "dist_info") for a in sys.argv[1:])
    if decision.action == "skip" and not metadata_only:
        print(f"fasttrack: installing without the CUDA extension fasttrack._C ({decision.reason}); "
              "the Triton and torch backends remain available", file=sys.stderr)
    if decision.action == "skip":
        ext_modules, cmdclass = [], {}
    else:
        ext_modules, cmdclass = [CMakeExtension("fasttrack._C")], {"build_ext": CMakeBuild}

    kernel_packages = ["fasttrack.kernels"] + [
        f"fasttrack.kernels.{p}" for p in find_packages(where="kernels")]
    setup(
        packages=find_packages(include=["fasttrack", "fasttrack.*"]) + kernel_packages,
        package_dir={"fasttrack.kernels": "kernels"},
        # the trained tiny DeTrack and DMTrack (their pretrained(), about 2 MB each)
        package_data={"fasttrack.trackers.detrack": ["weights/*.pt"],
                      "fasttrack.trackers.dmtrack": ["weights/*.pt"],
                      "fasttrack.trackers.diffusion": ["weights/tiny_sd/*", "weights/tiny_sd/*/*"]},
        ext_modules=ext_modules,
        cmdclass=cmdclass,
    )


if __name__ == "__main__":
    _setup()
