"""``audio.shutter`` through a real browser's microphone path (``python -m bench
audio_browser``, about four minutes).

In a call the sidecar hears what the page's microphone track carries: Chromium's audio
processing (echo cancellation, noise suppression, automatic gain control, on by default for
``getUserMedia({audio: true})``) and then Opus. The evaluation set mixes shutters into speech
and applies Opus only. Here one seeded file (espeak-ng speech over a -60 dBFS pink room,
Debian's sound-theme-freedesktop camera shutter and screen capture every 5 s at -9..+6 dB
to the speech) is Chromium's fake microphone (headless Debian ``chromium``), recorded in the
page with ``MediaRecorder`` (Opus at 32 kbit/s, what WebRTC sends a microphone at) twice at
once: with the default processing and with it switched off. The recordings are aligned with
the file (the fake microphone loops it from wherever it is when capture starts) by
cross-correlation, then analysed in 20 ms pieces as a call's audio is. The file itself
through libopus at 32 kbit/s, without a browser, is the reference row.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import signal as sps

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_audio_eval import analyse
from bench.results import write_section
from tests.media.corpus_audio import (
    RATE,
    Audio,
    load_file,
    load_sound,
    opus_round_trip,
    room_noise,
    set_level,
    speech_bed,
    write_wav,
)

__all__ = ["main", "make_microphone", "score"]

SECONDS = 180.0
EVERY_S = 5.0
SNRS_DB = (-9.0, -6.0, -3.0, 0.0, 3.0, 6.0)
SOUNDS = ("camera-shutter", "screen-capture")
SLACK_S = 0.15
OPUS_BPS = 32_000


@dataclass(frozen=True)
class Event:
    t: float
    sound: str
    snr_db: float


def make_microphone(seed: int = 23) -> tuple[Audio, list[Event]]:
    """The fake microphone's file: speech, room, a shutter sound every :data:`EVERY_S`."""
    rng = np.random.default_rng(seed)
    bed = speech_bed(rng, "heldout", SECONDS, -24.0)
    bed += room_noise(len(bed), rng, -60.0, "pink")
    events: list[Event] = []
    for k in range(int(SECONDS // EVERY_S) - 1):
        event = Event(round(2.0 + k * EVERY_S + float(rng.uniform(0, 1.5)), 3),
                      SOUNDS[k % len(SOUNDS)], SNRS_DB[k % len(SNRS_DB)])
        sound = set_level(load_sound(event.sound), -24.0 + event.snr_db)
        i = int(event.t * RATE)
        bed[i:i + len(sound)] += sound
        events.append(event)
    return bed, events


def _detections(x: Audio) -> list[float]:
    """When ``audio.shutter`` fired in ``x`` (48 kHz), pushed in 20 ms pieces."""
    return [d.t for d in analyse(x, RATE)[0] if d.signal == "audio.shutter"]


def _offset(recording: Audio, source: Audio) -> float:
    """Where in the (looping) source the recording starts, in seconds: the lag of the
    best cross-correlation of their first 20 s, taken at 4 kHz (speech dominates)."""
    down = 12  # 48 kHz -> 4 kHz: the speech band is enough to align
    rec = sps.decimate(recording[: 20 * RATE], down, ftype="fir")
    src = sps.decimate(np.concatenate([source, source[: 20 * RATE]]), down, ftype="fir")
    corr = sps.correlate(src, rec, mode="valid", method="fft")
    return float(np.argmax(np.abs(corr)) * down / RATE)


def score(times: list[float], events: list[Event], offset: float,
          length: float) -> tuple[set[int], int]:
    """(indexes of the events found, false alarms) for detections at ``times`` in a
    recording that starts ``offset`` s into the looping file of ``length`` s."""
    found: set[int] = set()
    false = 0
    for t in times:
        at = (t + offset) % length
        hits = [i for i, e in enumerate(events)
                if abs(at - e.t) <= SLACK_S or abs(at - e.t - length) <= SLACK_S]
        if hits:
            found.update(hits)
        else:
            false += 1
    return found, false


async def _record(profile: Path, microphone: Path, seconds: float,
                  processing: bool) -> Audio:
    from tests.browser.harness import StaticSite, playwright_context, record_in_page

    audio: object = True if processing else {
        "echoCancellation": False, "noiseSuppression": False, "autoGainControl": False}
    with StaticSite() as site:
        url = site.add("mic.html", "<!doctype html><title>microphone</title>")
        async with playwright_context(profile, audio_file=microphone) as ctx:
            page = await ctx.new_page()
            await page.goto(url)
            data = await record_in_page(page, {"audio": audio}, seconds,
                                        mimeType="audio/webm;codecs=opus",
                                        audioBitsPerSecond=OPUS_BPS)
    webm = profile.with_suffix(".webm")
    webm.write_bytes(data)
    return load_file(webm, trim=False)


def _row(label: str, found: set[int], false: int, events: list[Event],
         minutes: float) -> str:
    by_snr = " · ".join(
        f"{snr:+.0f} dB {sum(1 for i, e in enumerate(events) if e.snr_db == snr and i in found)}"
        f"/{sum(1 for e in events if e.snr_db == snr)}" for snr in SNRS_DB)
    return (f"| {label} | {len(found)}/{len(events)} | {by_snr} | {false} "
            f"({false / minutes * 60:.1f} an hour) |")


async def _measure(tmp: Path) -> list[str]:
    source, events = make_microphone()
    microphone = write_wav(tmp / "microphone.wav", source, RATE)
    length = len(source) / RATE
    rows = ["| path | shutters found | by level to the speech | false alarms |",
            "|---|---|---|---|"]
    reference = opus_round_trip(source, OPUS_BPS)
    found, false = score(_detections(reference), events, 0.0, length)
    rows.append(_row(f"the file through libopus {OPUS_BPS // 1000} kbit/s (no browser)",
                     found, false, events, length / 60))
    # both recordings at once: each is real time
    seconds = length + 1.0
    processed, raw = await asyncio.gather(
        _record(tmp / "processing", microphone, seconds, True),
        _record(tmp / "raw", microphone, seconds, False))
    for label, rec in (("Chromium, default processing (echo cancellation, noise suppression, "
                        "gain control), Opus", processed),
                       ("Chromium, processing off, Opus", raw)):
        offset = _offset(rec, source)
        found, false = score(_detections(rec), events, offset, length)
        rows.append(_row(label, found, false, events, len(rec) / RATE / 60))
        print(f"  {label}: {len(found)}/{len(events)}, {false} false (offset {offset:.2f} s)")
    return rows


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="sg-browser-audio-") as tmp:
        try:
            rows = asyncio.run(_measure(Path(tmp)))
        except Exception as exc:  # no Chromium or Playwright: say so instead of a table
            rows = [f"Not measured in this run: {exc!r}."]
    body = "\n".join([
        "How the shutter detector fares on what a browser actually sends (see the module",
        "docstring of `bench/bench_audio_browser.py`): one 180 s seeded file as Chromium's fake",
        "microphone, recorded in the page with and without its default audio processing.",
        f"{int(SECONDS // EVERY_S) - 1} shutter sounds (the freedesktop theme's camera shutter",
        "and screen capture, in turn) at -9..+6 dB to the speech; a detection counts when it",
        f"starts within {SLACK_S} s of one. First run 2026-11-29 (eleventh session); nothing",
        "was tuned on it.",
        "",
        *rows,
    ])
    write_section("audio_browser", "`audio.shutter` through Chromium's microphone path", body)


if __name__ == "__main__":
    main()
