"""``video.extra_person`` and ``video.no_person``: faces counted over time.

Method: OpenCV's shipped Haar cascades (frontal face; the profile cascade, mirrored too,
every ``profile_every``-th run and whenever the frontal one finds fewer faces than before,
its extra faces held in between) run about once a second (``interval_s``) on the gray
picture (histogram-equalised in poor light) downscaled to ``work_width`` (240);
overlapping boxes are merged. While every counted face has been found by the frontal
cascade in the last ``track_min_hits`` runs, a run looks only around them (about a fifth of
the cost) and the whole picture every ``full_every``-th run, so someone arriving is counted
up to ``full_every`` - 1 runs later; a periodic profile run then looks one way (as is,
mirrored) at a time. A face found the run before and missed now while its picture is still
where it was followed to is held, and the profile and tilted searches wait for a second
miss in a row. Faces are tracked between runs (template matching on the
pictures in between); a face found by ``track_min_hits`` runs (3) that a later run misses is still
counted while its picture is found where it moved to (``track_min_score``), for up to
``track_hold_runs`` runs. The count is held between runs, and episodes need the condition for
``extra_min_s`` (two or more faces) or ``none_min_s`` (no face),
bridging one missed run (``gap_s``), so a single miss or a single false box never fires.

Confidence: ``extra_person`` 0.8, ``no_person`` 0.7; both are
multiplied by a lighting factor: Haar detectors miss faces far more often in poor light, at
low contrast and — documented for face detectors generally — on darker skin. The evidence
then says ``lighting: poor`` and carries a note. ``no_person`` is worded as an observation
about the picture ("no face detected"), never as something the patient did.

A head tilted to one side is looked for only when no cascade found a face: the frontal
cascade runs again on the picture turned by +/- ``tilt_degrees`` (20°). When that finds
nothing either, smaller faces (a patient sitting back from the camera: under
``min_face_frac``, 15 % of the width, down to ``small_face_frac``, 8 %) are looked for on the
picture as analysed (320 wide, not the 240-wide working picture) with a finer scale step.
Both cost only while no face is found; in an empty room the small-face search (the dearest)
runs every other second.

Known failure modes: faces turned more than about 45°, faces under ``small_face_frac`` of
the width (someone far from the camera), masks and heavy shadows are missed; posters,
photos and screens showing faces are counted as people.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, cast

import cv2
import numpy as np

from signals.media.frames import Gray
from signals.media.params import FaceParams

__all__ = ["POOR_LIGHT_NOTE", "FaceDetector", "lighting_factor"]

POOR_LIGHT_NOTE = ("poor light or low contrast: face detection misses faces more often here, "
                   "and more often on darker skin; treat this as uncertain")

Box = tuple[int, int, int, int]


@functools.cache
def _cascade(name: str) -> cv2.CascadeClassifier:
    path = str(cv2.data.haarcascades) + name  # type: ignore[attr-defined]
    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():  # pragma: no cover - broken OpenCV install
        raise RuntimeError(f"OpenCV cascade {name} could not be loaded")
    return cascade


def _iou(a: Box, b: Box) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    ix = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    iy = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = ix * iy
    small = min(aw * ah, bw * bh)
    return inter / small if small else 0.0


def _merge(boxes: list[Box]) -> list[Box]:
    kept: list[Box] = []
    for box in sorted(boxes, key=lambda b: -b[2] * b[3]):
        if all(_iou(box, k) < 0.3 for k in kept):
            kept.append(box)
    return kept


def lighting_factor(luma: float, contrast: float, params: FaceParams) -> tuple[float, bool]:
    """(factor 0.4..1 applied to face confidences, poor light?)."""
    light = min(1.0, luma / max(params.poor_light_luma, 1e-6))
    con = min(1.0, contrast / max(params.poor_contrast, 1e-6))
    factor = max(0.4, min(light, con))
    return factor, factor < 1.0


@dataclass(slots=True)
class _Track:
    """One face between detection runs: where it is and what it looked like when last
    detected (a gray patch at working scale)."""

    box: Box
    template: Gray
    hits: int = 1            # detection runs that found it
    misses: int = 0          # detection runs since it was last found
    by_profile: bool = False  # last found by the profile cascade only


#: runs after its hold ran out that a dropped face is remembered (see ``_update_tracks``)
_REMEMBER_RUNS = 3
#: the search around a counted face (``FaceDetector._around_faces``) widens its box by this
#: much of its size on every side: room for the cascade's neighbouring windows and for a
#: face that moved since it was last followed
_AROUND = 0.5


def _same_face(patch: Gray, template: Gray, min_score: float) -> bool:
    """Does ``patch`` look like ``template`` (normalised correlation, at its size)?"""
    if patch.size == 0 or template.size == 0:
        return False
    h, w = template.shape[:2]
    resized = cv2.resize(patch, (w, h), interpolation=cv2.INTER_AREA)
    return float(cv2.matchTemplate(resized, template, cv2.TM_CCOEFF_NORMED)[0, 0]) >= min_score


def _patch(gray: Gray, box: Box) -> Gray:
    x, y, w, h = box
    return cast(Gray, np.ascontiguousarray(gray[y:y + h, x:x + w]))


class FaceDetector:
    """Counts faces in a gray picture (Haar cascades, frontal + profile) and tracks them
    between runs.

    ``count`` runs the cascades (about once a second); ``follow`` runs on the pictures in
    between and moves each face's box to where its picture now matches best (normalised
    template matching in a window around it). A face found by at least two runs that one run
    misses (a head turned or tilted, a hand in front) is still counted while its picture is
    still found where it was followed to, for up to ``track_hold_runs`` runs. Only faces found
    by ``track_min_hits`` runs (3) are held: a false box on a still background matches its
    own picture perfectly, and one found in fewer runs has not lasted long enough to raise an
    episode on its own, so holding it could. A held face dropped after its hold and found
    again within ``_REMEMBER_RUNS`` runs, where it was and still looking like its picture,
    keeps its history (the cascade flickers on some faces at some positions: each
    flicker started a track from scratch, never held, and a person in view read as none).
    """

    def __init__(self, params: FaceParams) -> None:
        self.p = params
        self._frontal = _cascade("haarcascade_frontalface_default.xml")
        self._profile = _cascade("haarcascade_profileface.xml")
        self._runs = 0
        self._last = 0
        self._small_wait = 0  # runs the small-face search still skips (after a fruitless one)
        self._side = 0  # the direction the last one-way profile run looked (0: as is)
        self.tracks: list[_Track] = []
        #: faces held long enough to count that were dropped in the last few runs
        self._lost: list[_Track] = []

    def _work(self, gray: Gray) -> Gray:
        width = self.p.work_width
        if gray.shape[1] > width:
            h = max(16, round(gray.shape[0] * width / gray.shape[1]))
            gray = cast(Gray, cv2.resize(gray, (width, h), interpolation=cv2.INTER_AREA))
        return gray

    def _relocate(self, gray: Gray, track: _Track) -> float:
        """Move ``track`` to the best match of its template near its box; the match score
        (-1..1; -1 when the window leaves the picture)."""
        x, y, w, h = track.box
        m = max(2, int(max(w, h) * self.p.track_margin))
        x0, y0 = max(0, x - m), max(0, y - m)
        x1, y1 = min(gray.shape[1], x + w + m), min(gray.shape[0], y + h + m)
        th, tw = track.template.shape[:2]
        if x1 - x0 < tw or y1 - y0 < th:
            return -1.0
        scores = cv2.matchTemplate(gray[y0:y1, x0:x1], track.template, cv2.TM_CCOEFF_NORMED)
        _, best, _, (bx, by) = cv2.minMaxLoc(scores)
        track.box = (x0 + bx, y0 + by, tw, th)
        return float(best)

    def forget(self) -> None:
        """Drop every tracked face (the picture was covered: nothing to follow)."""
        self.tracks.clear()
        self._lost.clear()
        self._last = 0

    def follow(self, gray: Gray) -> None:
        """Between detection runs: move every tracked face to where it now is."""
        if not self.tracks or self.p.track_hold_runs <= 0:
            return
        work = self._work(gray)
        for track in self.tracks:
            self._relocate(work, track)

    def count(self, gray: Gray, poor_light: bool = False) -> int:
        """Faces in ``gray``: this run's detections plus the tracked faces it missed."""
        p = self.p
        work = self._work(gray)
        # equalising helps in poor light but adds false boxes in good light
        eq = cv2.equalizeHist(work) if poor_light else work
        size = max(16, int(work.shape[1] * p.min_face_frac))
        kw: dict[str, Any] = {"scaleFactor": p.scale_factor, "minNeighbors": p.min_neighbors,
                              "minSize": (size, size)}
        self._runs += 1
        around = self._around_faces(cast(Gray, eq), kw)
        if around is not None:  # every counted face found where it was followed to
            self._small_wait = 0
            self._last = self._update_tracks(work, around, around, False)
            return self._last
        frontal: list[Box] = [tuple(int(v) for v in b)  # type: ignore[misc]
                              for b in self._frontal.detectMultiScale(eq, **kw)]
        # the profile cascade costs about 1.5x the frontal one: it runs every
        # ``profile_every``-th run, and whenever the frontal one finds fewer faces than were
        # last counted (a person turning away). In an empty picture (nothing counted last
        # time either) only the periodic runs look for someone arriving in profile.
        periodic = p.profile_every > 0 and self._runs % p.profile_every == 0
        # a face the frontal cascade found last run and misses now while its picture is still
        # where it was followed to is held this run whatever the other searches find (the
        # cascade flickers on some faces at some positions through a codec); they wait for a
        # second miss in a row (the periodic profile run still looks for someone arriving)
        flicker = self._only_flickered(work, frontal)
        profile_run = periodic or (p.profile_every > 0 and not flicker
                                   and len(frontal) < self._last)
        side: list[Box] = []
        if profile_run:
            kw["minNeighbors"] = p.profile_min_neighbors
            # a periodic run that only looks for someone arriving in profile (every counted
            # face is a frontal one, found again) looks one way, the next one the other way
            one_way = (self._last > 0 and len(frontal) >= self._last
                       and not any(t.by_profile for t in self.tracks))
            self._side = (self._side + 1) % 2 if one_way else 0
            if not one_way or self._side == 0:
                side = [tuple(int(v) for v in b)  # type: ignore[misc]
                        for b in self._profile.detectMultiScale(eq, **kw)]
            if not one_way or self._side == 1:
                width = work.shape[1]
                mirrored = np.ascontiguousarray(eq[:, ::-1])
                side += [(int(width - x - w), int(y), int(w), int(h))
                         for x, y, w, h in self._profile.detectMultiScale(mirrored, **kw)]
        if not frontal and not side and p.tilt_degrees > 0 and not flicker:
            # a head tilted to one side (resting on a hand) defeats both cascades; this runs
            # only when nothing else was found, so a visible face costs nothing extra
            frontal = self._tilted(cast(Gray, eq), kw | {"minNeighbors": p.min_neighbors})
        held = any(t.box[2] >= size and t.hits >= p.track_min_hits for t in self.tracks)
        if not frontal and not side and p.small_face_frac > 0 and not held:
            # someone sitting back from the camera: a face too small for the search above.
            # The dearest search: after one that found nothing (an empty room) it skips a
            # run; a no_person episode needs none_min_s (3 s) of runs without a face. Not
            # while a face the normal search found is still followed: that miss is a blip
            # (a turn, a blur), and the held track counts it.
            if self._small_wait:
                self._small_wait -= 1
            else:
                frontal = self._small(gray, work.shape[1], size, poor_light)
                self._small_wait = 0 if frontal else 1
        else:
            self._small_wait = 0
        self._last = self._update_tracks(work, _merge(frontal), _merge(frontal + side),
                                         profile_run)
        return self._last

    def _only_flickered(self, work: Gray, frontal: list[Box]) -> bool:
        """Is every counted face that ``frontal`` misses one the run before found (by the
        frontal cascade, after ``track_min_hits`` runs) whose picture still matches where it
        was followed to? Such a face is held this run (``_update_tracks``) whatever the
        profile and tilted searches would find; only the count of its misses differs."""
        p = self.p
        missed = [t for t in self.tracks if all(_iou(box, t.box) < 0.3 for box in frontal)]
        return bool(missed) and p.track_hold_runs > 0 and all(
            t.misses == 0 and not t.by_profile and t.hits >= p.track_min_hits
            and self._relocate(work, t) >= p.track_min_score for t in missed)

    def _around_faces(self, eq: Gray, kw: dict[str, Any]) -> list[Box] | None:
        """The frontal cascade only around the faces being counted (each box followed to
        where the face is now, widened by ``_AROUND`` of its size on every side), on the runs
        where that is all the whole-picture search would be needed for: every counted face
        has been found by ``track_min_hits`` runs, the last of them the run before, by the
        frontal cascade at the normal sizes. The whole picture is still searched every
        ``full_every``-th run and on every profile run (someone arriving is found there, up
        to ``full_every`` - 1 runs later than by a whole search every run). The merged
        boxes when every counted face was found again; ``None`` (search the whole picture)
        when one was missed."""
        p = self.p
        if (p.full_every <= 1 or not self.tracks or self._runs % p.full_every == 0
                or (p.profile_every > 0 and self._runs % p.profile_every == 0)):
            return None
        size = kw["minSize"][0]
        if any(t.misses or t.by_profile or t.hits < p.track_min_hits or t.box[2] < size
               for t in self.tracks):  # (a face found by the small search: not here)
            return None
        h, w = eq.shape[:2]
        boxes: list[Box] = []
        for track in self.tracks:
            x, y, bw, bh = track.box
            m = max(2, round(max(bw, bh) * _AROUND))
            x0, y0 = max(0, x - m), max(0, y - m)
            region = eq[y0:min(h, y + bh + m), x0:min(w, x + bw + m)]
            found: list[Box] = [(x0 + int(fx), y0 + int(fy), int(fw), int(fh))
                                for fx, fy, fw, fh in self._frontal.detectMultiScale(region, **kw)]
            if all(_iou(box, track.box) < 0.3 for box in found):
                return None
            boxes += found
        return _merge(boxes)

    def _small(self, gray: Gray, work_width: int, size: int, poor_light: bool) -> list[Box]:
        """The frontal cascade on the picture as analysed (wider than the working picture),
        for faces from ``small_face_frac`` of its width up to a little over the smallest the
        normal search finds; boxes in working-picture coordinates."""
        p = self.p
        width = gray.shape[1]
        lo = max(20, int(width * p.small_face_frac))
        hi = int(size * max(1.0, width / work_width) * 1.3)
        if hi <= lo:
            return []
        eq = cv2.equalizeHist(gray) if poor_light else gray
        scale = work_width / max(width, work_width)
        return [(round(x * scale), round(y * scale), max(1, round(w * scale)),
                 max(1, round(h * scale)))
                for x, y, w, h in self._frontal.detectMultiScale(
                    eq, scaleFactor=p.small_scale_factor, minNeighbors=p.min_neighbors,
                    minSize=(lo, lo), maxSize=(hi, hi))]

    def _tilted(self, eq: Gray, kw: dict[str, Any]) -> list[Box]:
        """The frontal cascade on ``eq`` turned by +/- ``tilt_degrees`` about its centre; each
        box found is turned back (its centre; the box keeps its size)."""
        h, w = eq.shape[:2]
        centre = (w / 2, h / 2)
        found: list[Box] = []
        for angle in (self.p.tilt_degrees, -self.p.tilt_degrees):
            turn = cv2.getRotationMatrix2D(centre, angle, 1.0)
            turned = cv2.warpAffine(eq, turn, (w, h), flags=cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_REPLICATE)
            back = cv2.invertAffineTransform(turn)
            for x, y, bw, bh in self._frontal.detectMultiScale(turned, **kw):
                cx, cy = (float(v) for v in back @ np.array([x + bw / 2, y + bh / 2, 1.0]))
                # turned back, a box near a corner can stick out of the picture: keep it in
                # (its picture becomes the tracking template)
                bx = min(max(round(cx - bw / 2), 0), w - int(bw))
                by = min(max(round(cy - bh / 2), 0), h - int(bh))
                found.append((bx, by, int(bw), int(bh)))
        return found

    def _update_tracks(self, work: Gray, frontal: list[Box], found: list[Box],
                       profile_run: bool) -> int:
        p = self.p
        tracks = self.tracks
        matched: set[int] = set()
        kept: list[_Track] = []
        self._lost = [t for t in self._lost if t.misses <= p.track_hold_runs + _REMEMBER_RUNS]
        for track in self._lost:
            track.misses += 1
        for box in found:
            best, best_iou = None, 0.3
            for i, track in enumerate(tracks):
                overlap = _iou(box, track.box)
                if i not in matched and overlap >= best_iou:
                    best, best_iou = i, overlap
            by_profile = all(_iou(box, f) < 0.3 for f in frontal)
            if best is None:
                patch = _patch(work, box)
                # the same face found again soon after its track was dropped (a few runs
                # missed it: a turn, a blur, the codec) keeps its history, so it is held
                # through the next misses as before instead of starting over
                again = next((t for t in self._lost if _iou(box, t.box) >= 0.3
                              and _same_face(patch, t.template, p.track_min_score)), None)
                if again is not None:
                    self._lost.remove(again)
                kept.append(_Track(box, patch, (again.hits if again else 0) + 1,
                                   by_profile=by_profile))
                continue
            matched.add(best)
            old = tracks[best]
            kept.append(_Track(box, _patch(work, box), old.hits + 1, 0, by_profile))
        counted = len(kept)
        for i, track in enumerate(tracks):
            if i in matched:
                continue
            if track.by_profile and not profile_run:
                # only the profile cascade can see it, and it did not run: held as before
                kept.append(track)
                counted += 1
                continue
            track.misses += 1
            if (p.track_hold_runs > 0 and track.hits >= p.track_min_hits
                    and track.misses <= p.track_hold_runs
                    and self._relocate(work, track) >= p.track_min_score
                    and all(_iou(track.box, k.box) < 0.3 for k in kept)):
                kept.append(track)
                counted += 1
            elif track.hits >= p.track_min_hits:
                self._lost.append(track)
        self.tracks = kept
        return counted
