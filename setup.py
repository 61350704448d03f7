"""Build of the native parts (plain C extensions: CPU kernels, io_uring reads); everything else is in
pyproject.toml."""

from pathlib import Path

from setuptools import Extension, setup

CSRC = Path("moestream/kernels/cpu/csrc")

native = Extension(
    "moestream.kernels.cpu._native",
    sources=sorted(str(p) for p in CSRC.glob("*.c")),
    depends=sorted(str(p) for p in CSRC.glob("*.h")),
    # Baseline x86-64 code; the AVX2 and AVX-512 tiers are compiled per function (target attributes) and picked at
    # run time.
    extra_compile_args=["-O3", "-std=c11", "-pthread", "-fno-strict-aliasing", "-Wall", "-Wno-unused-function"],
    extra_link_args=["-pthread", "-lm"],
    # Without a C compiler the package still installs and runs on the PyTorch reference (much slower);
    # tests/kernels fails loudly in that case rather than skipping.
    optional=True,
)

uring = Extension(
    "moestream.store._uring",
    sources=["moestream/store/csrc/uring.c"],
    extra_compile_args=["-O2", "-std=gnu11", "-Wall"],
    # Linux only (raw io_uring syscalls, kernel headers); elsewhere the thread-pool reader is used.
    optional=True,
)

setup(ext_modules=[native, uring])
