"""Exception types raised by the geometry and scene core on bad input."""

from __future__ import annotations


class GeometryError(ValueError):
    """Input that cannot be turned into valid geometry (bad shape, dtype, non-finite values)."""


class NoValidDepthError(GeometryError):
    """A depth image, window or patch set holds no valid depth where some was required."""
