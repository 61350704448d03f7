"""Run a command with io_uring_setup refused (EPERM), as a seccomp profile of a container runtime does.

`python -m tests.store.seccomp PROGRAM ARGS...` installs a seccomp BPF filter on itself (allowed unprivileged
after PR_SET_NO_NEW_PRIVS; inherited across exec) that fails syscall 425 with EPERM and allows everything
else, then execs the program. `deny_io_uring()` does the first half in the calling process."""

from __future__ import annotations

import ctypes
import os
import platform
import struct
import sys

IO_URING_SETUP = 425  # the same number on x86-64 and arm64 (the unified syscall table)
AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2
RET_ALLOW, RET_ERRNO = 0x7FFF0000, 0x00050000
LD_ABS_W, JEQ_K, RET_K = 0x20, 0x15, 0x06  # BPF_LD|BPF_W|BPF_ABS, BPF_JMP|BPF_JEQ|BPF_K, BPF_RET|BPF_K
EPERM = 1


def program(arch: int) -> bytes:
    """seccomp_data: nr at offset 0, arch at 4. Other architectures pass untouched (their numbers differ)."""
    insns = [
        (LD_ABS_W, 0, 0, 4),
        (JEQ_K, 0, 3, arch),  # not this architecture: allow
        (LD_ABS_W, 0, 0, 0),
        (JEQ_K, 0, 1, IO_URING_SETUP),
        (RET_K, 0, 0, RET_ERRNO | EPERM),
        (RET_K, 0, 0, RET_ALLOW),
    ]
    return b"".join(struct.pack("=HBBI", *i) for i in insns)


def deny_io_uring() -> None:
    machine = platform.machine()
    if machine not in AUDIT_ARCH:
        raise SystemExit(f"seccomp helper: no syscall table for {machine}; add its AUDIT_ARCH and number")
    code = ctypes.create_string_buffer(program(AUDIT_ARCH[machine]))

    class Prog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    prog = Prog(len(code.raw) // 8, ctypes.addressof(code))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong]
    for option, arg, ptr in ((PR_SET_NO_NEW_PRIVS, 1, None), (PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(prog))):
        if libc.prctl(option, arg, ptr, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), f"prctl({option}, {arg}) failed: {os.strerror(ctypes.get_errno())}")


if __name__ == "__main__":
    deny_io_uring()
    os.execvp(sys.argv[1], sys.argv[1:])
