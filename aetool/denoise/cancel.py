"""Stopping a denoising run between forward passes.

The pipeline's compute thread sets an Event in :data:`_CANCEL` (one per
thread); the tiled pass and the refinement call :func:`_check_cancel` before
each unit of work, which raises :class:`_Cancelled` once the consumer has gone
away (closed the results, or was interrupted).
"""

from __future__ import annotations

import threading


class _Cancelled(Exception):
    """The pipeline's consumer went away (closed the results, or was interrupted)."""


#: Per thread: an Event that, once set, stops :func:`_denoise_one` before its next pass.
_CANCEL = threading.local()


def _check_cancel() -> None:
    cancel = getattr(_CANCEL, "event", None)
    if cancel is not None and cancel.is_set():
        raise _Cancelled
