"""``sessionguard analyze FILE [--json]``: run the video and audio detectors over a file.

Decodes any file FFmpeg reads (:mod:`monitor.mediafile`, in memory only), feeds the frames
to :class:`signals.media.video.VideoAnalyzer` and the audio to
:class:`signals.media.audio.AudioAnalyzer`, and prints one line per detected episode (with
``--json`` the object of CONTRACT.md). A progress bar goes to stderr when it is a terminal.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TextIO

import numpy as np
import numpy.typing as npt

from monitor.allocator import keep_freed_memory
from monitor.mediafile import AudioItem, DecodeReport, MediaInfo, VideoItem, decode, probe
from signals.errors import MediaError
from signals.media.audio import MAX_RATE, MIN_RATE
from signals.media.audio_band import NARROWBAND, narrowband_note
from signals.media.audio_params import audio_params_from_dict
from signals.media.audio_shutter import narrow_band_note
from signals.media.detection import Detection
from signals.media.frames import MIN_SIDE
from signals.media.params import MediaParams, load_media_params
from signals.media.video import VideoAnalyzer

__all__ = ["AnalyzeResult", "analyze_file", "format_detection", "register", "run"]


class _Audio(Protocol):
    def push(self, samples: npt.NDArray[np.float32], sample_rate: int,
             t: float) -> list[Detection]: ...

    def finish(self, t: float) -> list[Detection]: ...


def _audio_analyzer(params: MediaParams) -> _Audio | None:
    try:
        from signals.media.audio import AudioAnalyzer
    except ImportError:  # pragma: no cover - the audio detectors are not installed
        return None
    analyzer: _Audio = AudioAnalyzer(params.audio or None)
    return analyzer


@dataclass
class AnalyzeResult:
    """Closed episodes of every media signal, in time order, and what was decoded."""

    detections: list[Detection] = field(default_factory=list)
    duration: float = 0.0
    video_frames: int = 0
    audio_chunks: int = 0
    #: the duration the file declares, when decoding stopped well before it (a truncated or
    #: damaged file: ``duration`` is what could be decoded)
    declared: float | None = None
    #: the lowest sample rate of the audio analysed (``None``: no audio)
    audio_rate: int | None = None
    #: the band check's verdict at the end (``signals.media.audio_band``) and its level
    audio_band: str | None = None
    audio_band_db: float | None = None
    #: what was left out and why, one sentence each (streams, damaged packets)
    notes: list[str] = field(default_factory=list)


#: decoding that stops more than this short of the declared duration (and 5 % of it) is reported
_SHORT_BY_S = 1.0


def analyze_file(
    path: str | Path,
    params: MediaParams | None = None,
    progress: Callable[[float], None] | None = None,
    video: bool = True,
    audio: bool = True,
) -> AnalyzeResult:
    """Run the detectors over ``path``; raises ``MediaError`` for unreadable files and for
    files holding nothing the detectors can use."""
    params = params or MediaParams()
    info = probe(path)
    result = AnalyzeResult()
    video, audio = _usable(path, info, video, audio, result.notes)
    v = VideoAnalyzer(params.video) if video else None
    a = _audio_analyzer(params) if audio else None
    found: list[Detection] = []
    report = DecodeReport()
    last = 0.0
    small = low = 0
    for item in decode(path, video=v is not None, audio=a is not None,
                       max_width=params.video.work_width,
                       want_video=v.wants if v is not None else None,
                       colour=v is not None and v.wants_colour, max_rate=MAX_RATE,
                       report=report):
        if isinstance(item, VideoItem) and v is not None:
            if min(item.frame.shape[:2]) < MIN_SIDE:  # the size changed mid-stream
                small += 1
                continue
            found += v.push(item.frame, item.t)
            result.video_frames += 1
            last = max(last, item.t + 1 / 30)
        elif isinstance(item, AudioItem) and a is not None:
            if item.rate < MIN_RATE:  # the rate changed mid-stream
                low += 1
                continue
            found += a.push(item.samples, item.rate, item.t)
            result.audio_chunks += 1
            result.audio_rate = min(result.audio_rate or item.rate, item.rate)
            last = max(last, item.t + len(item.samples) / max(item.rate, 1))
        if progress is not None and info.duration:
            progress(min(1.0, item.t / info.duration))
    if not result.video_frames and not result.audio_chunks:
        failed = (f"; {report.bad_packets} packets failed to decode ({report.first_error})"
                  if report.bad_packets else "")
        raise MediaError(f"{path}: no audio or video could be decoded from it "
                         f"(an empty, truncated or damaged file?){failed}")
    result.notes += _decode_notes(path, report, small, low, last)
    end = max(last, info.duration or 0.0)
    if info.duration and info.duration - last > max(_SHORT_BY_S, 0.05 * info.duration):
        # the file ends early: what follows would be judged on nothing
        end, result.declared = last, info.duration
    if progress is not None:
        progress(1.0)
    for analyzer in (v, a):
        if analyzer is not None:
            found += analyzer.finish(end)
    result.duration = end
    band = getattr(a, "band", None)
    if band is not None:
        result.audio_band, result.audio_band_db = band.state, band.level_db
    # live streams need both the "open" and the "closed" report; a file needs the episode once
    result.detections = sorted(
        (d for d in found if d.end is not None or d.evidence.get("episode") != "open"),
        key=lambda d: (d.t, d.signal))
    return result


def _usable(path: str | Path, info: MediaInfo, video: bool, audio: bool,
            notes: list[str]) -> tuple[bool, bool]:
    """Which of the file's video and audio the detectors can use; a stream they cannot is
    left out with a note in ``notes``, and a file with nothing left is a ``MediaError``."""
    why = {kind: f"its {kind} stream has no decoder in FFmpeg (an unknown or unsupported "
                  "codec)" for kind in info.undecodable}
    if info.has_video and 0 < min(info.width, info.height) < MIN_SIDE:
        why["video"] = (f"its video is {info.width}x{info.height} pixels, smaller than the "
                        f"{MIN_SIDE}x{MIN_SIDE} the video detectors need")
    if info.has_audio and 0 < info.audio_rate < MIN_RATE:
        why["audio"] = (f"its audio is sampled at {info.audio_rate} Hz, below the "
                        f"{MIN_RATE} Hz the audio detectors need")
    use_video = video and info.has_video and "video" not in why
    use_audio = audio and info.has_audio and "audio" not in why
    wanted = [kind for kind, asked in (("video", video), ("audio", audio)) if asked]
    if wanted and not use_video and not use_audio:
        reasons = [why.get(kind, f"it has no {kind}") for kind in wanted]
        raise MediaError(f"{path} cannot be analysed: {' and '.join(reasons)}")
    for kind, reason in why.items():
        if kind in wanted:
            notes.append(f"{path}: {reason}; its {kind} was not analysed")
    return use_video, use_audio


def _decode_notes(path: str | Path, report: DecodeReport, small: int, low: int,
                  last: float) -> list[str]:
    notes = []
    if report.bad_packets:
        notes.append(f"{report.bad_packets} damaged packet(s) of {path} could not be decoded "
                     f"({report.first_error}) and were skipped")
    if report.read_error:
        notes.append(f"reading {path} failed after {last:.1f} s ({report.read_error}); "
                     "the rest was not analysed")
    if small:
        notes.append(f"{small} video frame(s) of {path} smaller than {MIN_SIDE}x{MIN_SIDE} "
                     "pixels were not analysed")
    if low:
        notes.append(f"{low} audio chunk(s) of {path} sampled below {MIN_RATE} Hz were not "
                     "analysed")
    return notes


def format_detection(d: Detection) -> str:
    """One human-readable line."""
    end = "…" if d.end is None else f"{d.end:7.2f}s"
    extras = ", ".join(f"{k}={v}" for k, v in d.evidence.items()
                       if k not in ("episode", "note") and not isinstance(v, dict | list))
    line = f"{d.t:7.2f}s – {end}  {d.signal:<24} confidence {d.confidence:.2f}"
    if extras:
        line += f"  ({extras})"
    if "note" in d.evidence:
        line += f"\n          note: {d.evidence['note']}"
    return line


class _Bar:
    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.shown = -1

    def __call__(self, frac: float) -> None:
        pct = int(frac * 100)
        if pct != self.shown:
            self.shown = pct
            filled = pct * 30 // 100
            self.stream.write(f"\ranalysing [{'#' * filled}{'.' * (30 - filled)}] {pct:3d}%")
            self.stream.flush()

    def done(self) -> None:
        if self.shown >= 0:
            self.stream.write("\r" + " " * 50 + "\r")
            self.stream.flush()


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "analyze", help="run the audio and video detectors over a media file",
        description="Decode a media file (anything FFmpeg reads) in memory and print the "
                    "media signals the audio and video detectors find.")
    parser.add_argument("file", metavar="FILE", help="the media file")
    parser.add_argument("--json", action="store_true",
                        help="one JSON object per detection (CONTRACT.md)")
    parser.add_argument("--params", default=None, metavar="YAML",
                        help="detector parameters (default: config/media.yaml)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    keep_freed_memory()
    params = load_media_params(args.params)
    bar = _Bar(sys.stderr) if sys.stderr.isatty() else None
    try:
        result = analyze_file(args.file, params, progress=bar)
    finally:
        if bar is not None:
            bar.done()
    if result.declared is not None:
        sys.stderr.write(f"sessionguard analyze: note: decoding stopped at "
                         f"{result.duration:.1f} s of the {result.declared:.1f} s {args.file} "
                         "declares; the rest is missing or damaged and was not analysed\n")
    for line in result.notes:
        sys.stderr.write(f"sessionguard analyze: note: {line}\n")
    if result.audio_rate is not None:
        audio_params = audio_params_from_dict(params.audio or None)
        note = narrow_band_note(result.audio_rate, audio_params.shutter)
        if note is None and result.audio_band == NARROWBAND and audio_params.shutter.enabled:
            note = narrowband_note(result.audio_band_db, audio_params.band)
        if note is not None:
            sys.stderr.write(f"sessionguard analyze: note: {note}\n")
    out = sys.stdout
    if args.json:
        for d in result.detections:
            out.write(json.dumps(d.to_json(), sort_keys=True) + "\n")
    else:
        if not result.detections:
            out.write(f"no media signals in {args.file} ({result.duration:.1f} s analysed)\n")
        for d in result.detections:
            out.write(format_detection(d) + "\n")
    return 0
