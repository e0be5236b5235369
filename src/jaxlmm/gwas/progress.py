"""The scans' progress bar over chunks (tqdm on standard error, shown when it is a terminal by default)."""

from __future__ import annotations


def progress_bar(total: int, enabled: bool | None):
    """A tqdm bar of ``total`` chunks, or None (not enabled, or a single chunk)."""
    import sys

    show = enabled if enabled is not None else sys.stderr.isatty()
    if not show or total <= 1:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="chunk", desc="jaxlmm scan", file=sys.stderr)
