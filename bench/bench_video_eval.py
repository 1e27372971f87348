"""Precision and recall of the video detectors on the generated evaluation set
(``python -m bench video_eval``).

The set comes from :mod:`tests.media.corpus_video` (photographs scikit-image ships, seeded
camera motion and sensor noise, covered/black/uniform, frozen, replayed, screen and
virtual-camera clips), each passed through a libvpx VP8 round trip in memory. Seeds 0-3
were used while tuning; the figures are for held-out seeds 10-15, at a typical WebRTC
bitrate for 320x240 (400 kbit/s) and at a starved one (150 kbit/s).

Scoring, per clip and signal: a closed episode that overlaps a labelled interval is a true
positive; a labelled interval without one is a miss; an episode of a signal the clip is not
labelled with is a false alarm.
"""

from __future__ import annotations

import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.results import write_section
from bench.scoring import Score
from signals.media.detection import Detection
from signals.media.video import VideoAnalyzer
from tests.media.corpus_video import Clip, all_clips, vp8_round_trip

__all__ = ["Run", "Score", "evaluate", "main"]

SIGNALS = ("video.extra_person", "video.no_person", "video.obscured", "video.frozen",
           "video.loop", "video.synthetic_source")
HELDOUT = range(10, 16)
STRONG = "video.synthetic_source with confidence ≥ 0.6"


def analyse(clip: Clip) -> tuple[list[Detection], float]:
    analyzer = VideoAnalyzer()
    found: list[Detection] = []
    start = time.process_time()
    for i, frame in enumerate(clip.frames):
        found += analyzer.push(frame, i / clip.fps)
    found += analyzer.finish(clip.duration)
    return [d for d in found if d.end is not None], time.process_time() - start


@dataclass
class Run:
    scores: dict[str, Score] = field(default_factory=lambda: defaultdict(Score))
    clips: int = 0
    cpu: float = 0.0
    seconds: float = 0.0


def evaluate(seeds: range, bitrates: tuple[int, ...]) -> dict[int, Run]:
    """Score every clip of ``seeds`` after a VP8 round trip at each bitrate."""
    runs = {b: Run() for b in bitrates}
    for raw in all_clips(seeds):
        for bitrate, run in runs.items():
            clip = vp8_round_trip(raw, bitrate)
            found, used = analyse(clip)
            run.cpu += used
            run.seconds += clip.duration
            run.clips += 1
            _score(run.scores, clip, found)
    return runs


def _score(scores: dict[str, Score], clip: Clip, found: list[Detection]) -> None:
    for signal in SIGNALS:
        eps = [d for d in found if d.signal == signal]
        for lo, hi in clip.labels.get(signal, []):
            if any(d.t < hi and (d.end or d.t) > lo for d in eps):
                scores[signal].tp += 1
            else:
                scores[signal].fn += 1
                scores[signal].misses.append(clip.name)
        if signal not in clip.labels and eps:
            scores[signal].fp += 1
            scores[signal].false_alarms.append(clip.name)
    strong = [d for d in found if d.signal == "video.synthetic_source" and d.confidence >= 0.6]
    key = STRONG
    if "video.synthetic_source" in clip.labels:
        if strong:
            scores[key].tp += 1
        else:
            scores[key].fn += 1
            scores[key].misses.append(clip.name)
    elif strong:
        scores[key].fp += 1
        scores[key].false_alarms.append(clip.name)


def _table(scores: dict[str, Score]) -> str:
    rows = ["| signal | TP | FP | FN | precision | recall | misses / false alarms |",
            "|---|---|---|---|---|---|---|"]
    for s in (*SIGNALS, STRONG):
        sc = scores[s]
        notes = ", ".join([*(f"miss {m}" for m in sc.misses),
                           *(f"FA {f}" for f in sc.false_alarms)]) or "—"
        name = f"`{s}`" if s in SIGNALS else s
        rows.append(f"| {name} | {sc.tp} | {sc.fp} | {sc.fn} | {sc.precision:.2f} | "
                    f"{sc.recall:.2f} | {notes} |")
    return "\n".join(rows)


def main() -> None:
    parts = []
    for bitrate, run in evaluate(HELDOUT, (400_000, 150_000)).items():
        scores, clips, cpu, seconds = run.scores, run.clips, run.cpu, run.seconds
        print(f"bitrate {bitrate // 1000} kbit/s: {clips} clips, {seconds:.0f} s of video, "
              f"analysis {cpu:.1f} s CPU ({seconds / max(cpu, 1e-9):.0f}x real time)")
        table = _table(scores)
        print(table)
        parts.append(f"### VP8 at {bitrate // 1000} kbit/s — {clips} clips, {seconds:.0f} s of "
                     f"320x240 10 fps video; analysis {1000 * cpu / seconds:.0f} ms CPU per "
                     f"second of video\n\n{table}")
    body = (
        "Held-out seeds 10-15 of `tests/media/corpus_video.py` (seeds 0-3 were used to tune); "
        "clip-level scoring (see `bench/bench_video_eval.py`). Every clip passed through "
        "libvpx VP8 in memory.\n\n" + "\n\n".join(parts) +
        "\n\nAt a starved bitrate VP8 smooths sensor noise away, so "
        "`video.synthetic_source` loses precision there; those episodes are reported as "
        "`strength: weak` with a confidence ≤ 0.55. The row `≥ 0.6` counts only strong "
        "episodes (clean content such as a shared screen): a rule that alerts on "
        "`confidence >= 0.6` keeps its precision at low bitrates but misses noise-free "
        "virtual cameras showing a camera picture. Read it together with device and capture "
        "signals (README, section Video signals).")
    write_section("video_eval", "Video detectors: precision and recall", body)


if __name__ == "__main__":
    main()
