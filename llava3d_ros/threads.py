"""Threads with names the OS sees too (``top -H``, ``/proc/<pid>/task/*/comm``, perf).

Python's thread names stay inside Python (until 3.14); operators watching a node's CPU per
thread, and ``bench/bench_node.py``'s per-thread breakdown, need the native name.
"""

from __future__ import annotations

import ctypes
import sys
import threading
from collections.abc import Callable

_PR_SET_NAME = 15  # prctl(2): name the calling thread, at most 15 bytes


def set_native_name(name: str) -> bool:
    """Name the calling OS thread (Linux); False where that is not possible."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return False
    return prctl(_PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0) == 0


def named_thread(
    target: Callable[[], object],
    name: str,
    daemon: bool = True,
    on_exit: Callable[[BaseException | None], None] | None = None,
) -> threading.Thread:
    """A ``threading.Thread`` running ``target`` that names its OS thread ``name`` first.

    ``on_exit`` learns how the thread ended: None when ``target`` returned, else what it
    raised (then reported by ``on_exit`` alone). A worker whose owner must know that it
    stopped (diagnostics, answers) passes one; without it an exception reaches Python's
    thread excepthook as usual.
    """

    def run() -> None:
        set_native_name(name)
        if on_exit is None:
            target()
            return
        try:
            target()
        except BaseException as exc:  # reported to the owner instead of dying unseen
            on_exit(exc)
            return
        on_exit(None)

    return threading.Thread(target=run, name=name, daemon=daemon)
