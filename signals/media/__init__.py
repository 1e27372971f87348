"""Media detectors: pure functions and small stateful classes over numpy arrays and
timestamps (seconds from stream start). See docs/internals.md for the seam."""

from signals.media.detection import Detection

__all__ = ["Detection"]
