"""The video detectors behind one object: ``VideoAnalyzer(params).push(frame, t)``.

Frames may arrive at any size and rate. Each pushed frame is validated; one is analysed
every ``1 / cheap_fps`` seconds (taken up to a quarter of that early, so a stream at about
that rate whose timestamps wobble is analysed whole) and the rest are dropped unseen
(``wants(t)`` tells a caller in advance, so a decoder can skip converting them). Analysed
frames lose their black bars (letterbox, pillarbox: :class:`~signals.media.frames.BarTrim`),
are downscaled to ``work_width`` and gray; the cheap checks (obscured, frozen, loop) run on
every analysed frame, the noise estimate every ``synthetic.interval_s``, the face detector
every ``faces.interval_s`` and the optional object model every ``objects.interval_s``.

Each signal is an :class:`~signals.media.episodes.Episode`: ``push`` returns a
:class:`Detection` with ``end=None`` (``evidence.episode == "open"``) when an episode is
confirmed and another with ``end`` set (``"closed"``) when it ends; ``finish(t)`` closes the
open ones. An obscured picture explains a missing face, a repeated black frame and a
missing noise floor, so while the picture is obscured ``no_person``, ``frozen``, ``loop``
and ``synthetic_source`` are not judged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from signals.media.detection import Detection
from signals.media.episodes import Episode
from signals.media.faces import POOR_LIGHT_NOTE, FaceDetector, lighting_factor
from signals.media.frames import BarTrim, Gray, check_frame, prepare
from signals.media.frozen import FrozenCheck
from signals.media.loop import LoopIndex, phash
from signals.media.objects import ObjectDetector
from signals.media.obscured import ObscuredCheck, measure_picture
from signals.media.params import MediaParams, VideoParams, media_params_from_dict
from signals.media.synthetic import NoiseCheck, word_strength

__all__ = ["VIDEO_SIGNALS", "VideoAnalyzer"]

#: the noise check compares a picture with the previous analysed one only this close to it
_PAIR_MAX_S = 0.6

VIDEO_SIGNALS = (
    "video.extra_person",
    "video.no_person",
    "video.obscured",
    "video.frozen",
    "video.loop",
    "video.synthetic_source",
    "video.phone",
)


#: a picture is taken up to this fraction of the analysis period before it is due
_EARLY = 0.25


class VideoAnalyzer:
    """Stateful analysis of one video stream (seconds from stream start).

    ``params``: :class:`VideoParams`, a whole :class:`MediaParams`, the ``video:`` mapping of
    ``config/media.yaml`` (validated; :class:`ConfigError` on a bad key) or ``None``.
    """

    def __init__(
        self, params: VideoParams | MediaParams | Mapping[str, Any] | None = None
    ) -> None:
        if isinstance(params, MediaParams):
            params = params.video
        elif isinstance(params, Mapping):
            params = media_params_from_dict({"video": dict(params)}).video
        p = self.params = params or VideoParams()
        self._period = 1.0 / p.cheap_fps
        self._last_t: float | None = None
        self._due = 0.0  # when the next picture should be analysed
        self._prev_small: Gray | None = None
        self._prev_t = 0.0
        # the previous analysed picture at work width, for the noise check's temporal part
        self._prev_gray: Gray | None = None
        self._prev_gray_t = 0.0
        self._bars = BarTrim(p.bars)
        self._faces = FaceDetector(p.faces)
        self._obscured = ObscuredCheck(p.obscured)
        self._frozen = FrozenCheck(p.frozen)
        self._loop = LoopIndex(p.loop)
        self._noise = NoiseCheck(p.synthetic)
        self._objects = ObjectDetector(p.objects) if p.objects.model else None
        self._next_face = 0.0
        self._next_noise = 0.0
        self._next_object = 0.0
        self._ep = {
            "video.extra_person": Episode("video.extra_person", p.faces.extra_min_s,
                                          p.faces.gap_s),
            "video.no_person": Episode("video.no_person", p.faces.none_min_s, p.faces.gap_s),
            "video.obscured": Episode("video.obscured", p.obscured.min_s, p.obscured.gap_s),
            "video.frozen": Episode("video.frozen", p.frozen.min_s, p.frozen.gap_s),
            "video.loop": Episode("video.loop", p.loop.min_s, p.loop.gap_s),
            "video.synthetic_source": Episode("video.synthetic_source", p.synthetic.min_s,
                                              p.synthetic.gap_s, word=word_strength),
            "video.phone": Episode("video.phone", p.objects.min_s, p.objects.gap_s),
        }
        self.frames_analysed = 0

    @property
    def wants_colour(self) -> bool:
        """Does a picture need its colours? Only for the optional object model (a COCO-style
        detector takes colour); every other detector looks at brightness, so decoders hand
        over the luma alone unless this is true."""
        return self._objects is not None

    def wants(self, t: float) -> bool:
        """Would a frame at ``t`` be analysed? (Others are dropped unseen.)

        Pictures are due every ``1 / cheap_fps`` seconds and one is taken up to a quarter of
        that early, so a stream at about the analysis rate whose capture times wobble (a
        browser's camera, an encoder holding to its maximum frame rate) is analysed whole,
        not at half the rate; a faster stream is never analysed faster on average."""
        last = self._last_t
        return last is None or t < last or t >= self._due - _EARLY * self._period

    def push(self, picture: npt.NDArray[np.uint8], t: float) -> list[Detection]:
        """Analyse one picture (HxW gray or HxWx3 BGR ``uint8``) taken at ``t`` seconds."""
        frame = check_frame(picture)
        t = float(t)
        if not self.wants(t):
            return []
        last, period = self._last_t, self._period
        if last is None or t < last:
            self._due = t + period
        else:  # on the grid of due times, or after a gap: a period from this picture's slack
            self._due = max(self._due + period, t + (1 - _EARLY) * period)
        self._last_t = t
        self.frames_analysed += 1
        p = self.params
        frame = self._bars(frame)
        prep = prepare(frame, p.work_width)
        out: list[Detection] = []
        pic = measure_picture(prep.small)
        obscured, conf, kind = self._obscured.judge(pic)
        out += self._ep["video.obscured"].update(
            obscured, t, conf, {"kind": kind, "mean_luma": round(pic.luma, 1),
                                "contrast": round(pic.contrast, 1)} if obscured else None)
        prev, prev_t = self._prev_small, self._prev_t
        self._prev_small, self._prev_t = prep.small, t
        same = False
        if prev is not None and not obscured:
            same, fconf, diff = self._frozen.judge(prev, prep.small)
            out += self._ep["video.frozen"].update(
                same, t, fconf, {"mean_diff": round(diff, 3)} if same else None, since=prev_t)
        else:
            out += self._ep["video.frozen"].update(False, t)
        if obscured:
            out += self._ep["video.loop"].update(False, t)
        else:
            looping, lconf, ev = self._loop.push(t, phash(prep.small))
            since = ev.pop("since", None) if looping else None
            out += self._ep["video.loop"].update(looping, t, lconf, ev or None, since=since)
        recent, recent_t = self._prev_gray, self._prev_gray_t
        if recent is None or same or not 0 < t - recent_t <= _PAIR_MAX_S:
            # a frozen picture explains a missing change (video.frozen says so)
            recent = None
        # a copy: a caller may hand us a view of a buffer it reuses
        self._prev_gray, self._prev_gray_t = (None if obscured else prep.gray.copy()), t
        if t >= self._next_noise or t < self._next_noise - 2 * p.synthetic.interval_s:
            self._next_noise = t + p.synthetic.interval_s
            if not obscured:
                synth, sconf, sev = self._noise.judge(prep.gray, recent)
                if synth is not None:
                    out += self._ep["video.synthetic_source"].update(
                        synth, t, sconf, sev if synth else None)
            else:
                self._noise.forget()
                out += self._ep["video.synthetic_source"].update(False, t)
        if t >= self._next_face or t < self._next_face - 2 * p.faces.interval_s:
            self._next_face = t + p.faces.interval_s
            out += self._faces_at(prep.gray, pic.luma, pic.contrast, obscured, t)
        elif obscured:
            self._faces.forget()
        else:
            self._faces.follow(prep.gray)
        if self._objects is not None and (t >= self._next_object
                                          or t < self._next_object - 2 * p.objects.interval_s):
            self._next_object = t + p.objects.interval_s
            held, score, area = self._objects.phone(frame)
            out += self._ep["video.phone"].update(
                held, t, score, {"score": round(score, 3), "area_fraction": round(area, 3),
                                 "class": "cell phone"} if held else None)
        return out

    def _faces_at(self, gray: Gray, luma: float, contrast: float, obscured: bool,
                  t: float) -> list[Detection]:
        fp = self.params.faces
        factor, poor = lighting_factor(luma, contrast, fp)
        if obscured:
            self._faces.forget()
        n = 0 if obscured else self._faces.count(gray, poor)
        base: dict[str, Any] = {"faces": n, "lighting": "poor" if poor else "ok",
                                "mean_luma": round(luma, 1), "contrast": round(contrast, 1)}
        if poor:
            base["note"] = POOR_LIGHT_NOTE
        out = self._ep["video.extra_person"].update(
            n >= 2, t, 0.8 * factor, base if n >= 2 else None)
        none = n == 0 and not obscured
        out += self._ep["video.no_person"].update(
            none, t, 0.7 * factor,
            {**base, "observation": "no face detected in the picture"} if none else None)
        return out

    def finish(self, t: float) -> list[Detection]:
        out: list[Detection] = []
        for ep in self._ep.values():
            out += ep.finish(float(t))
        out.sort(key=lambda d: (d.t, d.signal))
        return out
