"""Parameters of the media detectors (``config/media.yaml``), as pydantic models.

:func:`media_params_from_dict` is pure: it validates an already parsed mapping.
:func:`load_media_params` also accepts a path (or ``None`` for the shipped
``config/media.yaml``) and then reads that one YAML file; that is the only I/O here, kept at
the edge so callers in ``monitor/`` can do the reading themselves when they prefer.

The audio engineer's keys live under ``audio:``; ``audio_file:`` names a YAML file (relative
to the media file) whose mapping is merged under ``audio`` (keys given inline win).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from signals.errors import ConfigError
from signals.yaml_errors import describe_yaml_error, load_yaml, not_utf8

__all__ = [
    "DEFAULT_MEDIA_YAML",
    "BarParams",
    "FaceParams",
    "FrozenParams",
    "LoopParams",
    "MediaParams",
    "ObjectParams",
    "ObscuredParams",
    "SyntheticParams",
    "VideoParams",
    "load_media_params",
    "media_params_from_dict",
]

DEFAULT_MEDIA_YAML = Path(__file__).resolve().parents[2] / "config" / "media.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class FaceParams(_Strict):
    """``video.extra_person`` / ``video.no_person`` (Haar cascades)."""

    interval_s: float = Field(default=1.0, gt=0)
    work_width: int = Field(default=240, ge=64)  # faces are searched at this width
    profile_every: int = Field(default=3, ge=0)  # profile cascades every Nth run
    # while every counted face is steadily found, the frontal search looks only around them,
    # the whole picture every Nth run (and at any run that misses one of them); 1: always whole
    full_every: int = Field(default=3, ge=1)
    min_face_frac: float = Field(default=0.15, gt=0, lt=1)  # of the working width
    scale_factor: float = Field(default=1.2, gt=1)
    min_neighbors: int = Field(default=5, ge=1)
    profile_min_neighbors: int = Field(default=3, ge=1)  # the profile cascade is weaker
    # when no cascade finds a face, the frontal one runs again on the picture turned by
    # +/- this many degrees (a head tilted to one side); 0 turns it off
    tilt_degrees: float = Field(default=20.0, ge=0, le=45)
    # when still nothing is found, faces down to this fraction of the analysed picture's width
    # (a patient sitting back) are looked for at its full width; 0 turns it off
    small_face_frac: float = Field(default=0.08, ge=0, lt=1)
    small_scale_factor: float = Field(default=1.1, gt=1)
    extra_min_s: float = Field(default=2.0, ge=0)
    none_min_s: float = Field(default=3.0, ge=0)
    gap_s: float = Field(default=1.5, ge=0)               # a missed detection this short is bridged
    # tracking between runs: a face found by >= track_min_hits runs stays counted through this many
    # missed runs while its picture still matches (normalised correlation >= track_min_score)
    # within track_margin x its size of where it was followed to; 0 turns tracking off
    track_hold_runs: int = Field(default=2, ge=0)
    track_min_hits: int = Field(default=3, ge=1)  # only faces found by this many runs are held
    track_min_score: float = Field(default=0.6, gt=-1, le=1)
    track_margin: float = Field(default=0.5, gt=0, le=2)
    poor_light_luma: float = Field(default=60.0, ge=0)
    poor_contrast: float = Field(default=30.0, ge=0)


class BarParams(_Strict):
    """Black bars (letterbox, pillarbox) trimmed off the picture before any analysis."""

    enabled: bool = True
    max_luma: int = Field(default=24, ge=0, le=128)  # a bar's rows/columns are never brighter
    min_content: float = Field(default=0.4, gt=0, le=1)  # the picture left, per direction
    hold_frames: int = Field(default=3, ge=1, le=100)  # a new trim is used once this steady


class ObscuredParams(_Strict):
    """``video.obscured``: covered, black or uniform picture."""

    dark_luma: float = Field(default=22.0, ge=0)
    uniform_std: float = Field(default=7.0, ge=0)
    uniform_edges: float = Field(default=3.0, ge=0)
    min_s: float = Field(default=2.0, ge=0)
    gap_s: float = Field(default=0.5, ge=0)


class FrozenParams(_Strict):
    """``video.frozen``: consecutive analysed frames identical within codec noise."""

    max_mean_diff: float = Field(default=0.25, ge=0)
    max_changed_frac: float = Field(default=0.002, ge=0, le=1)
    changed_level: int = Field(default=6, ge=1)
    min_s: float = Field(default=3.0, ge=0)
    gap_s: float = Field(default=0.3, ge=0)


class LoopParams(_Strict):
    """``video.loop``: a run of perceptual-hash matches to an earlier segment."""

    window_s: float = Field(default=60.0, gt=0)
    min_offset_s: float = Field(default=1.5, gt=0)
    max_hamming: int = Field(default=5, ge=0, le=64)
    offset_tolerance_s: float = Field(default=0.25, ge=0)
    min_s: float = Field(default=2.0, ge=0)
    min_drift_bits: int = Field(default=14, ge=0, le=64)  # segment must move
    gap_s: float = Field(default=0.5, ge=0)


class SyntheticParams(_Strict):
    """``video.synthetic_source``: the camera-noise residual is missing."""

    interval_s: float = Field(default=0.5, gt=0)
    max_noise_sigma: float = Field(default=0.52, ge=0)
    strong_noise_sigma: float = Field(default=0.2, ge=0)
    max_temporal_sigma: float = Field(default=0.6, ge=0)
    temporal_pictures: int = Field(default=3, ge=1)
    flat_gradient: float = Field(default=12.0, gt=0)
    min_flat_frac: float = Field(default=0.05, ge=0, le=1)
    min_s: float = Field(default=4.0, ge=0)
    gap_s: float = Field(default=1.0, ge=0)


class ObjectParams(_Strict):
    """Optional object detector (ONNX through ``cv2.dnn``), COCO classes: ``video.phone``."""

    model: str | None = None          # path to an ONNX file; None disables the hook
    input_size: int = Field(default=320, ge=32)
    class_id: int = Field(default=67, ge=0)   # COCO "cell phone"
    min_score: float = Field(default=0.5, ge=0, le=1)
    min_area_frac: float = Field(default=0.02, ge=0, le=1)
    interval_s: float = Field(default=1.0, gt=0)
    min_s: float = Field(default=1.0, ge=0)
    gap_s: float = Field(default=1.5, ge=0)


class VideoParams(_Strict):
    """Everything :class:`signals.media.video.VideoAnalyzer` is tuned by."""

    work_width: int = Field(default=320, ge=64, le=1920)  # frames are downscaled to this width
    cheap_fps: float = Field(default=5.0, gt=0, le=30)    # obscured/frozen/loop checks per second
    bars: BarParams = BarParams()
    faces: FaceParams = FaceParams()
    obscured: ObscuredParams = ObscuredParams()
    frozen: FrozenParams = FrozenParams()
    loop: LoopParams = LoopParams()
    synthetic: SyntheticParams = SyntheticParams()
    objects: ObjectParams = ObjectParams()


class MediaParams(_Strict):
    """``config/media.yaml``: ``video`` for our analyzer, ``audio`` passed to AudioAnalyzer."""

    video: VideoParams = VideoParams()
    audio: dict[str, Any] = Field(default_factory=dict)


def media_params_from_dict(data: Mapping[str, Any] | None,
                           name: str = "media parameters") -> MediaParams:
    """Validate a parsed ``media.yaml`` mapping (pure), the ``audio`` section included
    (against :class:`~signals.media.audio_params.AudioParams`). Raises :class:`ConfigError`
    naming ``name`` (the file, when there is one)."""
    from signals.media.audio_params import audio_params_from_dict

    if data is None:
        return MediaParams()
    if not isinstance(data, Mapping):
        raise ConfigError(f"{name} must be a mapping of sections (video:, audio:)")
    body = {k: v for k, v in data.items() if k != "audio_file"}
    try:
        params = MediaParams.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "media"
        raise ConfigError(f"{name}: {where}: {first['msg']}") from None
    try:
        audio_params_from_dict(params.audio or None)
    except ConfigError as exc:
        raise ConfigError(f"{name}: {exc}") from None
    return params


def _read_yaml(path: Path, what: str = "media parameters") -> Any:
    try:
        return load_yaml(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} {not_utf8(path, exc)}") from None
    except ValueError:  # a name with a NUL byte in it
        raise ConfigError(f"cannot read {what} {str(path)!r}: not a usable file name") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} {path} are not valid YAML "
                          f"({describe_yaml_error(exc)})") from None


def _included_audio(path: Path, data: Mapping[str, Any]) -> dict[str, Any]:
    """The ``audio`` mapping of ``data`` merged over its ``audio_file`` (inline keys win)."""
    audio_file = data["audio_file"]
    inline = data.get("audio")
    if inline is not None and not isinstance(inline, Mapping):
        raise ConfigError(f"media parameters {path}: audio must be a mapping "
                          "(shutter:, virtual_source:, band:)")
    if not isinstance(audio_file, str) or not audio_file.strip():
        raise ConfigError(f"media parameters {path}: audio_file must be a file name, "
                          f"not {audio_file!r}")
    extra_path = path.parent / audio_file
    extra = _read_yaml(extra_path, "audio parameters")
    if extra is None:
        extra = {}
    if isinstance(extra, Mapping) and "audio" in extra:
        extra = extra["audio"] if extra["audio"] is not None else {}
    if not isinstance(extra, Mapping):
        raise ConfigError(f"audio parameters {extra_path} (the audio_file of {path}) must be "
                          "a mapping (shutter:, virtual_source:, band:)")
    return {**extra, **(inline or {})}


def load_media_params(source: str | Path | Mapping[str, Any] | None = None) -> MediaParams:
    """Media parameters from a parsed mapping (pure), a YAML path, or ``None`` (the shipped
    ``config/media.yaml``; built-in defaults if it is missing). Every problem, in the file or
    in its ``audio_file``, is a :class:`ConfigError` naming the file."""
    if isinstance(source, Mapping):
        return media_params_from_dict(source)
    path = DEFAULT_MEDIA_YAML if source is None else Path(source)
    if source is None and not path.exists():
        return MediaParams()
    data = _read_yaml(path)
    if data is None:
        return MediaParams()
    if not isinstance(data, Mapping):
        raise ConfigError(f"media parameters {path} must be a mapping of sections")
    if data.get("audio_file") is not None:
        data = {**data, "audio": _included_audio(path, data)}
    return media_params_from_dict(data, f"media parameters {path}")
