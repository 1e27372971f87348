"""Keep freed memory for reuse instead of handing it back to the kernel at once (glibc only).

The media detectors allocate and free arrays of a few hundred KiB for every analysed frame
(a 320x240 float32 picture is 300 KiB). glibc serves blocks that large with ``mmap`` and
returns the top of its heap to the kernel whenever more than 128 KiB is free there, so
nearly every such array was new memory the kernel had to fault in again page by page.
Measured here (a 2-core VM): ``sessionguard analyze`` took 5,000-17,000 page faults per 20 s
file; with the two limits below about 30. The camera-noise estimate then ran 2.6 times
faster inside ``analyze``, and live calls used 10.2 % instead of 10.9 % of a core each
(medians of three runs); ``analyze`` as a whole moved within run-to-run noise (its decoder
gains as much as the detectors). Peak memory was the same.

:func:`keep_freed_memory` raises glibc's ``mmap`` threshold to 32 MiB (larger blocks are
still mapped one by one) and the trim threshold to 128 MiB (the heap gives memory back once
that much at its top is free). Peak memory is unchanged; memory freed after a peak is kept up
to that bound. It is called by ``sessionguard serve``, ``analyze`` and ``demo``; set
``SESSIONGUARD_KEEP_FREED_MEMORY=0`` to leave glibc's defaults. On other C libraries it does
nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "keep_freed_memory"]

MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's largest allowed value on 64-bit
TRIM_THRESHOLD = 128 * 1024 * 1024
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # <malloc.h>
_done = False


def keep_freed_memory(environ: dict[str, str] | None = None) -> bool:
    """Apply the limits above once per process; ``True`` if glibc accepted them."""
    global _done
    env = os.environ if environ is None else environ
    if env.get("SESSIONGUARD_KEEP_FREED_MEMORY", "1").strip().lower() in ("0", "false", "no"):
        return False
    if _done:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    ok = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    _done = ok
    return ok
