"""Parameters of the audio detectors (``config/media_audio.yaml``), as pydantic models.

Pure: :func:`audio_params_from_dict` validates an already parsed mapping (the ``audio:``
section of the media parameters, or that file's whole mapping) and raises
:class:`~signals.errors.ConfigError` with one clear sentence.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from signals.errors import ConfigError
from signals.schema import first_error

__all__ = ["AudioParams", "BandParams", "ShutterParams", "VirtualSourceParams",
           "audio_params_from_dict"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ShutterParams(_Strict):
    """``audio.shutter``: a short, isolated cluster of sharp broadband clicks.

    A *click* is a 4 ms frame whose high-band (``band_hz``) level rises at least
    ``click_rise_db`` above the frames just before it, lies at most ``max_low_excess_db``
    below the whole-band level (the energy is mostly high-frequency), whose *onset flatness*
    (the spectral flatness of what the frame adds over the frames 8-12 ms before it, see
    :class:`~signals.media.audio_stream.FrameFeatures`) is at least ``min_flatness``
    (noise-like, not tonal) and falls back by
    ``click_decay_db`` within ``decay_frames`` frames (impulsive, not a fricative).
    """

    enabled: bool = True
    band_hz: tuple[float, float] = (3000.0, 7500.0)
    min_level_dbfs: float = Field(default=-62.0, le=0)
    click_rise_db: float = Field(default=8.0, gt=0)
    context_frames: int = Field(default=40, ge=3, le=250)
    background_percentile: float = Field(default=25.0, ge=0, le=100)
    attack_db: float = Field(default=6.0, ge=0)
    click_decay_db: float = Field(default=5.0, ge=0)
    decay_frames: int = Field(default=3, ge=1, le=10)
    min_flatness: float = Field(default=0.18, ge=0, le=1)
    max_low_excess_db: float = Field(default=12.0, ge=0)
    min_clicks: int = Field(default=3, ge=1)
    max_clicks: int = Field(default=8, ge=1)
    cluster_gap_s: float = Field(default=0.1, gt=0)
    max_span_s: float = Field(default=0.45, gt=0)
    isolation_s: float = Field(default=0.8, ge=0)
    max_neighbours: int = Field(default=2, ge=0)

    @model_validator(mode="after")
    def _order(self) -> ShutterParams:
        lo, hi = self.band_hz
        if not 0 < lo < hi <= 8000:
            raise ValueError("band_hz must be [low, high] with 0 < low < high <= 8000")
        if self.max_clicks < self.min_clicks:
            raise ValueError("max_clicks must not be smaller than min_clicks")
        return self


class VirtualSourceParams(_Strict):
    """``audio.virtual_source``: digital silence (no acoustic floor) between sounds.

    A 10 ms block below ``digital_dbfs`` is digital silence; a run of them between sounds,
    at least ``min_gap_s`` and at most ``max_gap_s`` long, is a *gap* (longer runs look like
    a muted track and are not counted; the live receiver reports 5 s of digital silence as
    the limit ``muted``, :mod:`signals.media.audio_silence`). Reported once
    ``min_silence_s`` of gaps in at least ``min_gaps`` gaps have been seen; the evidence is
    forgotten after ``reset_floor_s`` of pauses with a real noise floor (runs of at least
    ``floor_run_s`` of blocks between ``digital_dbfs`` and ``quiet_dbfs``); an open episode
    closes after ``clear_floor_s`` of such floor without a new gap.
    """

    enabled: bool = True
    digital_dbfs: float = Field(default=-98.0, le=0)
    quiet_dbfs: float = Field(default=-55.0, le=0)
    min_gap_s: float = Field(default=0.1, gt=0)
    max_gap_s: float = Field(default=15.0, gt=0)
    min_silence_s: float = Field(default=3.0, gt=0)
    min_gaps: int = Field(default=2, ge=1)
    floor_run_s: float = Field(default=0.3, gt=0)
    reset_floor_s: float = Field(default=2.0, gt=0)
    clear_floor_s: float = Field(default=5.0, gt=0)

    @model_validator(mode="after")
    def _order(self) -> VirtualSourceParams:
        if self.max_gap_s < self.min_gap_s:
            raise ValueError("max_gap_s must not be smaller than min_gap_s")
        if self.quiet_dbfs <= self.digital_dbfs:
            raise ValueError("quiet_dbfs must be above digital_dbfs")
        return self


class BandParams(_Strict):
    """The band check: does the audio carry what ``audio.shutter`` listens for?

    A 4 ms frame whose whole-band level is at least ``sound_dbfs`` is *sound*; for each, the
    level of ``top_band_hz`` under its whole-band level. Once ``min_sound_s`` of sound has
    been heard, the ``percentile`` of that difference over the last ``window_s`` of sound
    decides: below ``narrow_below_db`` the audio is *narrowband* (nothing up there but
    filter leakage); it is wideband again above ``wide_above_db``.
    """

    enabled: bool = True
    top_band_hz: tuple[float, float] = (6500.0, 7500.0)
    sound_dbfs: float = Field(default=-40.0, le=0)
    min_sound_s: float = Field(default=3.0, gt=0)
    window_s: float = Field(default=10.0, gt=0)
    percentile: float = Field(default=99.0, gt=0, le=100)
    narrow_below_db: float = Field(default=-48.0, le=0)
    wide_above_db: float = Field(default=-44.0, le=0)

    @model_validator(mode="after")
    def _order(self) -> BandParams:
        lo, hi = self.top_band_hz
        if not 0 < lo < hi <= 8000:
            raise ValueError("top_band_hz must be [low, high] with 0 < low < high <= 8000")
        if hi - lo < 125:
            # the 8 ms window's bins are 125 Hz apart: a narrower band can hold none
            raise ValueError("top_band_hz must span at least 125 Hz")
        if self.wide_above_db < self.narrow_below_db:
            raise ValueError("wide_above_db must not be below narrow_below_db")
        if self.window_s < self.min_sound_s:
            raise ValueError("window_s must not be shorter than min_sound_s")
        return self


class AudioParams(_Strict):
    """Everything :class:`~signals.media.audio.AudioAnalyzer` is tuned by."""

    batch_s: float = Field(default=0.1, ge=0, le=1)  # samples are analysed in batches this long
    max_jump_s: float = Field(default=0.06, gt=0)  # a larger jump in ``t`` restarts the framing
    shutter: ShutterParams = ShutterParams()
    virtual_source: VirtualSourceParams = VirtualSourceParams()
    band: BandParams = BandParams()


_NOT_A_MAPPING = "audio parameters must be a mapping (shutter:, virtual_source:, band:)"


def audio_params_from_dict(data: Mapping[str, Any] | None) -> AudioParams:
    """Validate a parsed mapping (optionally wrapped in ``audio:``). Raises ConfigError."""
    if data is None:
        return AudioParams()
    if not isinstance(data, Mapping):
        raise ConfigError(_NOT_A_MAPPING)
    body = data.get("audio", data) if set(data) == {"audio"} else data
    if body is None:
        return AudioParams()
    try:
        return AudioParams.model_validate(dict(body))
    except ValidationError as exc:
        raise ConfigError(f"audio parameters: {first_error(exc, 'audio')}") from None
    except (TypeError, ValueError):
        raise ConfigError(_NOT_A_MAPPING) from None
