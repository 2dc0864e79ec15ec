"""Process tuning for the bridge, applied once when the app starts (`app.create_app`'s lifespan),
never as a side effect of a call.

- The file-descriptor table is reserved (`reserve_fd_table`): Linux grows it by doubling as
  sockets open, and in a threaded process each growth stalls the event loop.
- The start-up heap is frozen (`freeze_startup_heap`: `gc.freeze()` once the app, its imports
  and warmed handlers are built, ~160k objects): a full collection then walks only what the
  calls allocate, so it no longer stalls every call's audio (60 loopback calls: ~90 ms per full
  collection before, ~2 ms after).
- The GIL's switch interval is set to `transport.GIL_SWITCH_INTERVAL_S` (with the freeze).
"""

from __future__ import annotations

import gc
import logging
import os
import sys

from mirror_bridge.transport import GIL_SWITCH_INTERVAL_S

log = logging.getLogger("mirror_bridge.tuning")

_heap_frozen = False


def freeze_startup_heap() -> bool:
    """Once per process (True the time it freezes): move every object the garbage collector
    tracks so far into its permanent generation. Start-up state lives as long as the process;
    left in the generations, each full collection walks all of it while the loop, and every
    call's audio, waits. The GIL's switch interval is set then too
    (`transport.GIL_SWITCH_INTERVAL_S`)."""
    global _heap_frozen
    if _heap_frozen:
        return False
    _heap_frozen = True
    gc.freeze()
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    return True


FD_TABLE_SIZE = 4096
"""File descriptors reserved at start-up: two sockets per call and the AWS clients' pools, with
room to spare (at most the soft RLIMIT_NOFILE; the task definition sets 65536)."""


def reserve_fd_table(size: int = FD_TABLE_SIZE) -> int:
    """Grow this process's file-descriptor table to `size` slots now; the size it has (0 when it
    could not be grown). Linux grows the table by doubling as sockets open (past fds 63, 127,
    255, 511, ...) and, in a threaded process, each growth waits for an RCU grace period inside
    whichever socket() or accept() crossed the line: 5-15 ms measured here, on the event loop,
    with every call's audio waiting. The table never shrinks, so this is paid once, before any
    call. No open descriptor is touched."""
    try:
        import fcntl
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        top = size if soft == resource.RLIM_INFINITY else min(size, soft)
        try:
            fcntl.fcntl(top - 1, fcntl.F_GETFD)  # open: the table reaches it already
        except OSError:  # free: a copy of a probe there grows the table to it
            probe = os.open(os.devnull, os.O_RDONLY)
            try:
                os.close(fcntl.fcntl(probe, fcntl.F_DUPFD, top - 1))
            finally:
                os.close(probe)
    except (ImportError, OSError, ValueError) as e:  # not Linux-like, or no room: run as is
        log.warning("file descriptor table not reserved: %s", e)
        return 0
    return top
