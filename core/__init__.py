"""What the API, the worker and the CLI share.

OpenMP threads that spin while they wait make PyTorch on a shared CPU 10-25x slower (a 2-core
box running an API beside a worker, or two workers): a 784-512-10 step went from 7,500 to
300 samples/s here. Passive waiting costs nothing measurable when the cores are free. It must
be set before torch is first imported; every entry point imports `core` first.
"""

import ctypes
import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _keep_freed_memory() -> None:
    """glibc hands freed heap back to the OS and maps big blocks afresh, so every training step
    paid up to 700k minor page faults an epoch (1.6 us each here) re-growing it. Keep up to
    1 GiB for reuse instead: the process stays at its peak size, which a worker reaches anyway."""
    if not sys.platform.startswith("linux") or os.environ.get("FITSERVE_KEEP_MALLOC_DEFAULTS"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt(m_trim_threshold, 1 << 30)
    libc.mallopt(m_mmap_threshold, 1 << 30)


_keep_freed_memory()
