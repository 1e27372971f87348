"""``audio.shutter``: a camera-shutter or screenshot sound in the microphone.

Method
------
Shutter sounds, mechanical or simulated, are a short burst of two or more *clicks*: sharp,
broadband, mostly high-frequency transients a few tens of milliseconds apart, the whole
thing over in well under half a second, and nothing like it around. Each 4 ms frame's
level in the 3-7.5 kHz band is compared with the frames just before it: a *click* rises
``click_rise_db`` above them within two frames, is noise-like there (the spectral flatness of
what the frame adds to the 8-12 ms before it, so voiced speech or a chime underneath does not
hide it), is not dominated by low frequencies, and falls back within ``decay_frames`` frames;
a second peak within those frames is a ripple of the same click and is not counted again.
Clicks closer than ``cluster_gap_s`` form a cluster; a cluster of
``min_clicks``..``max_clicks`` clicks spanning at most ``max_span_s`` and with no other click
within ``isolation_s`` either side is reported. The decision waits ``isolation_s`` after the
last click (so about a second of latency).

What it rejects, and why: notification chimes, bells and ring tones are tonal (low
flatness, no impulsive high-band onset); typing is a long train of clicks (never isolated);
knocks, door slams and coughs put their energy below 2 kHz or rise too slowly; speech
fricatives rise and decay too slowly to be clicks.

Confidence grows with the number of clicks, their rise above the background and their
flatness, from 0.55 to at most 0.9.

Known failure modes: a single isolated keystroke pair, a pen click or a lighter can look
like a shutter; resonant mechanical shutters (ringing clicks merging into a rattle) and
shutter sounds recorded at a low sample rate (nothing above 5 kHz) are often missed; a
phone set to silent makes no sound at all; a shutter far quieter than the
room (more than ~10 dB under speech, or under a loud broadband floor) is missed; a noise
suppressor outside the browser (the operating system's, a headset's) may remove the clicks
(Chromium's default processing was measured to keep them: ``bench/bench_audio_browser.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from signals.media.audio_params import ShutterParams
from signals.media.audio_stream import FrameFeatures
from signals.media.detection import Detection

__all__ = ["SIGNAL", "ShutterDetector", "narrow_band_note", "row_percentile"]

SIGNAL = "audio.shutter"
_FRAME_S = 0.004
# The click-band level taken for the time before a stream's first frame: below anything a
# frame measures (digital silence measures about -124 dBFS there).
_SILENCE_DB = -140.0


@dataclass(frozen=True, slots=True)
class _Click:
    t: float
    rise: float
    flatness: float


def narrow_band_note(sample_rate: int, params: ShutterParams) -> str | None:
    """A sentence for a user when audio at ``sample_rate`` cannot carry the band the clicks
    are measured in (a telephone or narrowband recording), else ``None``: such a file's
    silence about shutters means little."""
    top = sample_rate / 2
    lo, hi = params.band_hz
    if not params.enabled or top >= hi:
        return None
    holds = "nothing of it" if top <= lo else f"only {lo:.0f}-{top:.0f} Hz of it"
    return (f"audio sampled at {sample_rate} Hz holds nothing above {top:.0f} Hz; "
            f"{SIGNAL} listens for clicks at {lo:.0f}-{hi:.0f} Hz and hears {holds}, "
            "so a shutter here is likely missed")


def row_percentile(rows: npt.NDArray[np.float64], q: float) -> npt.NDArray[np.float64]:
    """``np.percentile(rows, q, axis=1)`` (its default linear method, the same rounding) by
    partial sorting: only the two order statistics around ``q`` are placed. About 7 times
    faster on the detector's 40-frame windows, where the full sort dominated."""
    n = rows.shape[1]
    k = q / 100 * (n - 1)
    lo = int(np.floor(k))
    hi = min(lo + 1, n - 1)
    t = k - lo
    part = np.partition(rows, [lo, hi] if hi != lo else [lo], axis=1)
    a, b = part[:, lo], part[:, hi]
    diff = b - a
    # numpy's _lerp: from the upper neighbour when t >= 0.5 (monotonic, exact at t = 1)
    out: npt.NDArray[np.float64] = b - diff * (1 - t) if t >= 0.5 else a + diff * t
    return out


class ShutterDetector:
    """Click-cluster detector over :class:`FrameFeatures` (see the module docstring)."""

    def __init__(self, params: ShutterParams) -> None:
        self.p = params
        self._ctx = params.context_frames
        self._look = params.decay_frames
        self._clicks: list[_Click] = []
        self._decided_until = -1.0  # clicks up to this time belong to decided clusters
        self.reset(stream_start=True)

    def reset(self, stream_start: bool = False) -> None:
        """Forget the frame context (a gap in the stream); pending clicks are kept.

        After a gap, frames are judged once ``context_frames`` new ones are there to judge
        them against. At a stream's start nothing came before it: the time before is taken
        as silence, as when a file is played, so a file that opens with a shutter is judged
        as the same sound would be after a quiet moment. The stream's first frame is not
        judged: its window straddles the start, where a sound cut off mid-way would look
        like an onset."""
        ctx = self._ctx if stream_start else 0
        self._t = np.zeros(ctx)  # never read: only frames after the context become clicks
        self._high = np.full(ctx, _SILENCE_DB)
        self._full = np.full(ctx, _SILENCE_DB)
        self._flat = np.zeros(ctx)
        # index in the buffers of the next frame to evaluate
        self._evaluated = self._ctx + 1 if stream_start else self._ctx

    def push(self, f: FrameFeatures) -> list[Detection]:
        if not self.p.enabled or len(f) == 0:
            return []
        self._t = np.concatenate([self._t, f.t])
        self._high = np.concatenate([self._high, f.high_db])
        self._full = np.concatenate([self._full, f.full_db])
        self._flat = np.concatenate([self._flat, f.onset_flatness])
        self._find_clicks()
        return self._decide(float(f.t[-1]), final=False)

    def finish(self, t: float) -> list[Detection]:
        return self._decide(t, final=True) if self.p.enabled else []

    def _find_clicks(self) -> None:
        p, ctx, look = self.p, self._ctx, self._look
        h = self._high
        lo, hi = max(self._evaluated, ctx), len(h) - look
        if hi > lo:
            k = np.arange(lo, hi)
            past = np.lib.stride_tricks.sliding_window_view(h, ctx)[k - ctx]
            background = row_percentile(past, p.background_percentile)
            ahead = np.lib.stride_tricks.sliding_window_view(h[1:], look)[k]
            peak = h[k]
            ok = ((peak >= p.min_level_dbfs)
                  & (peak >= h[k - 1]) & (peak > h[k + 1])
                  & (peak - background >= p.click_rise_db)
                  & (peak - np.minimum(h[k - 1], h[k - 2]) >= p.attack_db)
                  & (peak - ahead.min(axis=1) >= p.click_decay_db)
                  & (self._flat[k] >= p.min_flatness)
                  & (self._full[k] - peak <= p.max_low_excess_db))
            for i in np.flatnonzero(ok).tolist():
                j = int(k[i])
                self._add(_Click(float(self._t[j]), float(peak[i] - background[i]),
                                 float(self._flat[j])))
            self._evaluated = hi
        keep = max(0, len(h) - ctx - look - 2)
        if keep:
            self._t, self._high = self._t[keep:], self._high[keep:]
            self._full, self._flat = self._full[keep:], self._flat[keep:]
            self._evaluated -= keep

    def _add(self, click: _Click) -> None:
        """Keep ``click``, or fold it into the previous click when it peaks within that
        click's decay (``decay_frames``): a ripple of one sound is one click, so a single
        noisy burst (a plosive in speech) is not counted as two or three."""
        last = self._clicks[-1] if self._clicks else None
        if last is None or click.t - last.t > self._look * _FRAME_S + 1e-6:
            self._clicks.append(click)
        else:
            self._clicks[-1] = _Click(last.t, max(last.rise, click.rise),
                                      max(last.flatness, click.flatness))

    def _decide(self, now: float, final: bool) -> list[Detection]:
        p = self.p
        out: list[Detection] = []
        clicks = [c for c in self._clicks if c.t > now - 3 * p.isolation_s - p.max_span_s - 1]
        self._clicks = clicks
        i = 0
        while i < len(clicks):
            j = i
            while j + 1 < len(clicks) and clicks[j + 1].t - clicks[j].t <= p.cluster_gap_s:
                j += 1
            first, last = clicks[i], clicks[j]
            settled = now - last.t > max(p.isolation_s, p.cluster_gap_s)
            if first.t > self._decided_until and (settled or final):
                self._decided_until = last.t
                before = [c for c in clicks[:i] if c.t >= first.t - p.isolation_s]
                after = [c for c in clicks[j + 1:] if c.t <= last.t + p.isolation_s]
                det = self._judge(clicks[i:j + 1], len(before) + len(after))
                if det is not None:
                    out.append(det)
            i = j + 1
        return out

    def _judge(self, cluster: list[_Click], neighbours: int) -> Detection | None:
        p = self.p
        n = len(cluster)
        span = cluster[-1].t - cluster[0].t
        if not (p.min_clicks <= n <= p.max_clicks) or span > p.max_span_s:
            return None
        if neighbours > p.max_neighbours:
            return None
        rise = float(np.mean([c.rise for c in cluster]))
        flat = float(np.mean([c.flatness for c in cluster]))
        conf = (0.55 + 0.1 * min(n - p.min_clicks, 2) / 2
                + 0.15 * float(np.clip((rise - p.click_rise_db) / 15, 0, 1))
                + 0.1 * float(np.clip((flat - p.min_flatness) / 0.3, 0, 1)))
        return Detection(
            SIGNAL, round(cluster[0].t - _FRAME_S, 3), round(cluster[-1].t + _FRAME_S, 3),
            round(min(conf, 0.9), 3),
            {"method": "click-cluster", "clicks": n, "span_s": round(span, 3),
             "rise_db": round(rise, 1), "flatness": round(flat, 2)},
        )
