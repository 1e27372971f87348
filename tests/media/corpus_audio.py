"""The audio half of the evaluation set: clips generated from material Debian ships, with
exact labels.

Nothing here is committed media: every clip is built at test or bench time, in memory
(espeak-ng writes its speech to a temporary directory that is removed at once).

Material
--------
* **Positives for ``audio.shutter``**: ``camera-shutter.oga`` and ``screen-capture.oga``
  from Debian's ``sound-theme-freedesktop`` (the two files hold the same recording), pitched
  and stretched a little (±8 %) and filtered per clip so the set is not one waveform.
* **Distractors** that must not fire it: every other sound of that theme (chimes, bells,
  dialogs, phone tones, device plugged, trash emptied...) and, **synthesised** here because no
  package ships them: keyboard typing (trains of short filtered clicks at typing rhythm), a
  knock (two to four low damped thuds), a cough (a voiced noise burst with a falling
  envelope) and a door (a low slam with a rattle and a short creak). All seeded.
* **Speech**: ``espeak-ng`` with several voices and speeds.
* **Room noise**: seeded pink or brown noise, floors from -70 to -45 dBFS.
* **Opus round trip**: PyAV's libopus at 48 kHz, 20 ms frames, 24-64 kbit/s.

Splits: ``dev`` clips were used while building the detectors; ``heldout`` clips use other
seeds, other voices, other texts and other levels, and are what the benchmark reports.
"""

from __future__ import annotations

import functools
import subprocess
import tempfile
import wave
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Literal

import av
import numpy as np
import numpy.typing as npt
from scipy import signal as sps

__all__ = [
    "DISTRACTOR_SOUNDS",
    "RATE",
    "SHUTTER_SOUNDS",
    "SOUNDS",
    "Audio",
    "Clip",
    "Label",
    "Split",
    "build_set",
    "cough",
    "door",
    "keyboard_typing",
    "knock",
    "load_file",
    "load_sound",
    "opus_round_trip",
    "room_noise",
    "set_level",
    "shutter_clip",
    "speech",
    "speech_bed",
    "virtual_source_clip",
    "write_wav",
]

Audio = npt.NDArray[np.float32]
Split = Literal["dev", "heldout"]
RATE = 48_000
SOUNDS = Path("/usr/share/sounds/freedesktop/stereo")
SHUTTER_SOUNDS = ("camera-shutter", "screen-capture")
DISTRACTOR_SOUNDS = (
    "alarm-clock-elapsed", "audio-volume-change", "bell", "complete", "device-added",
    "device-removed", "dialog-error", "dialog-information", "dialog-warning",
    "message-new-instant", "message", "network-connectivity-established",
    "network-connectivity-lost", "phone-incoming-call", "phone-outgoing-busy",
    "phone-outgoing-calling", "power-plug", "power-unplug", "service-login",
    "service-logout", "suspend-error", "trash-empty", "window-attention", "window-question",
    "audio-channel-front-center", "audio-test-signal",
)
SYNTH_DISTRACTORS = ("typing", "knock", "cough", "door")

_TEXTS = {
    "dev": (
        "Hello doctor, I have been feeling much better since last week.",
        "The new medicine makes me a little tired in the afternoon.",
        "I walk for twenty minutes every morning, as you suggested.",
        "My sleep is still not great, I wake up around four.",
    ),
    "heldout": (
        "Yes, the pain in my shoulder comes back when I lift things.",
        "Could you explain the exercises once more, slowly please?",
        "I forgot to take the tablets twice this week, sorry.",
        "My daughter helps me with the shopping on Saturdays.",
    ),
}
_VOICES = {
    "dev": ("en-us", "en-gb", "en-us+f3"),
    "heldout": ("en-gb-scotland", "en-us+m3", "en-gb-x-rp+f2", "en-029"),
}


@dataclass(frozen=True, slots=True)
class Label:
    """One true episode: ``signal`` between ``t`` and ``end`` seconds."""

    signal: str
    t: float
    end: float


@dataclass(slots=True)
class Clip:
    """A mono float32 clip at :data:`RATE` with its exact labels."""

    name: str
    samples: Audio
    split: Split
    kind: str
    labels: list[Label] = field(default_factory=list)
    rate: int = RATE
    snr_db: float | None = None     # the event's level relative to the speech
    opus: int | None = None         # Opus bitrate of the round trip, if any


def _to_mono(frame: av.AudioFrame) -> npt.NDArray[np.float32]:
    data = frame.to_ndarray()
    channels = len(frame.layout.channels)
    arr = data.reshape(channels, -1).T if frame.format.is_planar else data.reshape(-1, channels)
    if arr.dtype.kind in "iu":
        half = float(2 ** (8 * arr.dtype.itemsize - 1))
        offset = half if arr.dtype.kind == "u" else 0.0  # 8-bit WAV is unsigned: 128 is 0
        arr = (arr.astype(np.float32) - offset) / half
    return np.asarray(arr.mean(axis=1), dtype=np.float32)


def _resample(x: npt.NDArray[np.floating], rate: int, to: int = RATE) -> Audio:
    if rate == to:
        return np.asarray(x, dtype=np.float32)
    ratio = Fraction(to, rate)
    y = sps.resample_poly(x, ratio.numerator, ratio.denominator)
    return np.asarray(y, dtype=np.float32)


@functools.cache
def _load_cached(path: Path) -> Audio:
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        rate = stream.rate
        parts = [_to_mono(f) for f in container.decode(stream)]
    return _resample(np.concatenate(parts), rate)


def load_file(path: Path, trim: bool = True) -> Audio:
    """A sound file (any format FFmpeg reads), decoded with PyAV, mono at 48 kHz, trimmed of
    leading and trailing silence unless ``trim`` is false."""
    x = _load_cached(Path(path))
    if not trim:
        return x.copy()
    loud = np.flatnonzero(np.abs(x) > 1e-4)
    return x[loud[0]: loud[-1] + 1].copy() if len(loud) else x.copy()


def write_wav(path: Path, samples: npt.NDArray[np.floating], rate: int) -> Path:
    """``samples`` (mono, -1..1, clipped) as a 16-bit PCM WAV at ``rate``; returns ``path``."""
    pcm = np.round(np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return path


def load_sound(name: str) -> Audio:
    """A sound of the freedesktop theme, decoded with PyAV, mono at 48 kHz, trimmed."""
    return load_file(SOUNDS / f"{name}.oga")


@functools.cache
def _speech_cached(text: str, voice: str, speed: int) -> Audio:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "speech.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(path), text],
                       check=True, capture_output=True)
        with wave.open(str(path)) as w:
            rate = w.getframerate()
            raw = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    return _resample(raw.astype(np.float32) / 32768.0, rate)


def speech(text: str, voice: str = "en-us", speed: int = 160) -> Audio:
    """``text`` spoken by espeak-ng, mono float32 at 48 kHz (exact zeros in its pauses)."""
    return _speech_cached(text, voice, speed).copy()


def _db(x: Audio) -> float:
    return float(10 * np.log10(np.mean(np.square(x, dtype=np.float64)) + 1e-20))


def set_level(x: Audio, dbfs: float) -> Audio:
    """Scale ``x`` so the RMS of its loud part (within 30 dB of its peak) is ``dbfs``."""
    env = np.abs(x)
    active = x[env > env.max() * 0.03] if env.max() > 0 else x
    gain = 10 ** ((dbfs - _db(active)) / 20)
    return np.asarray(x * gain, dtype=np.float32)


def room_noise(n: int, rng: np.random.Generator, floor_dbfs: float = -60.0,
               colour: Literal["pink", "brown"] = "pink") -> Audio:
    """Seeded pink (1/f) or brown (1/f²) noise of RMS ``floor_dbfs``."""
    white = rng.standard_normal(n)
    spec = np.fft.rfft(white)
    f = np.fft.rfftfreq(n, 1 / RATE)
    f[0] = f[1]
    shaped = spec / (np.sqrt(f) if colour == "pink" else f)
    shaped[f < 20] = 0
    y = np.fft.irfft(shaped, n)
    y *= 10 ** (floor_dbfs / 20) / (np.sqrt(np.mean(y**2)) + 1e-20)
    return np.asarray(y, dtype=np.float32)


def room_echo(rng: np.random.Generator, rt60_s: float, direct_db: float) -> Audio:
    """A simulated room impulse response at 48 kHz: the direct sound, then from 3 ms a tail
    of noise decaying 60 dB in ``rt60_s`` (gently low-passed: walls absorb the highs first),
    scaled so that the direct sound is ``direct_db`` above the tail's energy (the
    direct-to-reverberant ratio: about +10 dB for a phone held near the laptop, below 0 across
    a large bare room)."""
    n = int(RATE * rt60_s * 1.2)
    t = np.arange(n) / RATE
    tail = rng.standard_normal(n) * 10 ** (-3 * t / rt60_s)
    tail[: int(0.003 * RATE)] = 0.0
    b, a = sps.butter(1, 6000 / (RATE / 2))
    tail = sps.lfilter(b, a, tail)
    h = tail / np.sqrt(np.sum(tail ** 2)) * 10 ** (-direct_db / 20)
    h[0] += 1.0
    return np.asarray(h, dtype=np.float32)


def _band(x: npt.NDArray[np.floating], lo: float, hi: float) -> Audio:
    sos = sps.butter(4, [lo, hi], btype="bandpass", fs=RATE, output="sos")
    return np.asarray(sps.sosfilt(sos, x), dtype=np.float32)


def _burst(rng: np.random.Generator, dur: float, attack: float, decay: float,
           lo: float, hi: float) -> Audio:
    n = int(dur * RATE)
    t = np.arange(n) / RATE
    env = np.minimum(1.0, t / max(attack, 1e-4)) * np.exp(-t / decay)
    return _band(rng.standard_normal(n) * env, lo, hi)


def keyboard_typing(rng: np.random.Generator, seconds: float = 3.0) -> Audio:
    """Synthesised typing: key clicks (press and release) at 4-9 keys a second."""
    out = np.zeros(int(seconds * RATE), dtype=np.float32)
    t = 0.05
    while t < seconds - 0.2:
        lo, hi = rng.uniform(800, 2500), rng.uniform(5000, 12000)
        press = _burst(rng, 0.03, 0.0005, rng.uniform(0.003, 0.008), lo, hi)
        release = 0.4 * _burst(rng, 0.03, 0.0005, rng.uniform(0.002, 0.006), lo, hi)
        gain = rng.uniform(0.4, 1.0)
        i = int(t * RATE)
        j = i + int(rng.uniform(0.06, 0.12) * RATE)
        out[i:i + len(press)] += gain * press[: len(out) - i]
        out[j:j + len(release)] += gain * release[: max(0, len(out) - j)]
        t += rng.uniform(0.11, 0.25) if rng.random() > 0.1 else rng.uniform(0.3, 0.6)
    return out


def knock(rng: np.random.Generator) -> Audio:
    """Synthesised knock on a door or desk: 2-4 low damped thuds about 0.2 s apart."""
    count = int(rng.integers(2, 5))
    out = np.zeros(int((0.25 * count + 0.3) * RATE), dtype=np.float32)
    f0 = rng.uniform(90, 250)
    for k in range(count):
        n = int(0.15 * RATE)
        t = np.arange(n) / RATE
        thud = np.sin(2 * np.pi * f0 * t) * np.exp(-t / rng.uniform(0.015, 0.04))
        thud += 0.3 * _burst(rng, 0.15, 0.0005, 0.004, 200, 2500)
        i = int(k * rng.uniform(0.15, 0.25) * RATE)
        out[i:i + n] += thud.astype(np.float32)
    return out


def cough(rng: np.random.Generator) -> Audio:
    """Synthesised cough: a voiced, noisy burst with a fast attack and falling envelope."""
    dur = rng.uniform(0.25, 0.5)
    n = int(dur * RATE)
    t = np.arange(n) / RATE
    env = np.minimum(1.0, t / 0.012) * np.exp(-t / rng.uniform(0.08, 0.18))
    f0 = rng.uniform(110, 220) * (1 - 0.3 * t / dur)
    voiced = sps.sawtooth(2 * np.pi * np.cumsum(f0) / RATE) * 0.5
    noise = _band(rng.standard_normal(n), 300, rng.uniform(3000, 6000))
    formant = _band(voiced + noise, 250, 3500)
    return np.asarray(formant * env, dtype=np.float32)


def door(rng: np.random.Generator) -> Audio:
    """Synthesised door: a short creak, a low slam and the rattle after it."""
    creak_n = int(rng.uniform(0.2, 0.6) * RATE)
    t = np.arange(creak_n) / RATE
    f = rng.uniform(300, 700) + 150 * np.sin(2 * np.pi * rng.uniform(1, 3) * t)
    creak = 0.1 * sps.square(2 * np.pi * np.cumsum(f) / RATE, duty=0.2) * np.hanning(creak_n)
    creak = _band(creak, 200, 4000)
    slam_n = int(0.4 * RATE)
    ts = np.arange(slam_n) / RATE
    slam = np.sin(2 * np.pi * rng.uniform(50, 90) * ts) * np.exp(-ts / 0.06)
    slam += 0.25 * _burst(rng, 0.4, 0.001, 0.03, 100, 1500)
    slam += 0.08 * _burst(rng, 0.4, 0.002, 0.12, 1500, 5000)
    return np.concatenate([creak, slam.astype(np.float32)]).astype(np.float32)


def opus_round_trip(x: Audio, bitrate: int = 32_000) -> Audio:
    """Encode ``x`` (48 kHz mono) with libopus in 20 ms frames and decode it again."""
    enc = av.CodecContext.create("libopus", "w")
    enc.sample_rate = RATE
    enc.layout = "mono"
    enc.format = "s16"
    enc.bit_rate = bitrate
    enc.time_base = Fraction(1, RATE)
    enc.open()
    dec = av.CodecContext.create("libopus", "r")
    dec.sample_rate = RATE
    dec.layout = "mono"
    dec.open()
    pcm = np.clip(np.round(x * 32767), -32768, 32767).astype(np.int16)
    n = 960
    pad = np.zeros(-len(pcm) % n, dtype=np.int16)
    pcm = np.concatenate([pcm, pad])
    out: list[Audio] = []
    for k in range(0, len(pcm), n):
        frame = av.AudioFrame.from_ndarray(pcm[None, k:k + n], format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.pts = k
        for packet in enc.encode(frame):
            out.extend(_to_mono(f) for f in dec.decode(packet))
    for packet in enc.encode(None):
        out.extend(_to_mono(f) for f in dec.decode(packet))
    y = np.concatenate(out) if out else np.zeros(0, dtype=np.float32)
    delay = 312  # libopus' pre-skip at 48 kHz; keeps labels aligned within a few ms
    y = y[delay: delay + len(x)]
    return np.asarray(np.pad(y, (0, len(x) - len(y))), dtype=np.float32)


def speech_bed(rng: np.random.Generator, split: Split, seconds: float,
               level_dbfs: float = -24.0) -> Audio:
    """Sentences from ``split``'s voices and texts with 0.3-1.5 s pauses of exact zeros."""
    out: list[Audio] = [np.zeros(int(rng.uniform(0.2, 0.8) * RATE), dtype=np.float32)]
    total = len(out[0])
    texts, voices = _TEXTS[split], _VOICES[split]
    while total < seconds * RATE:
        s = speech(str(rng.choice(texts)), str(rng.choice(voices)), int(rng.integers(130, 200)))
        s = set_level(s, level_dbfs + rng.uniform(-3, 3))
        gap = np.zeros(int(rng.uniform(0.3, 1.5) * RATE), dtype=np.float32)
        out += [s, gap]
        total += len(s) + len(gap)
    return np.concatenate(out)[: int(seconds * RATE)]


def _pitch(x: Audio, factor: float) -> Audio:
    """Resample by ``factor`` (pitch and speed together), as a different device might."""
    ratio = Fraction(factor).limit_denominator(50)
    return np.asarray(sps.resample_poly(x, ratio.denominator, ratio.numerator), dtype=np.float32)


def _synth(name: str, rng: np.random.Generator) -> Audio:
    if name == "typing":
        return keyboard_typing(rng, rng.uniform(1.5, 3.5))
    if name == "knock":
        return knock(rng)
    if name == "cough":
        return cough(rng)
    return door(rng)


def shutter_clip(rng: np.random.Generator, split: Split, *, event: str, positive: bool,
                 seconds: float = 6.0, snr_db: float = 0.0, floor_dbfs: float = -55.0,
                 opus: int | None = None, name: str = "", sound: Audio | None = None) -> Clip:
    """Speech over room noise with one ``event`` sound (a theme sound or a synthetic class,
    or ``sound`` itself when given, e.g. from :func:`load_file`) at a random time, at
    ``snr_db`` relative to the speech level; then optionally Opus."""
    speech_db = -24.0
    bed = speech_bed(rng, split, seconds, speech_db)
    bed += room_noise(len(bed), rng, floor_dbfs, "pink" if rng.random() < 0.5 else "brown")
    if sound is None:
        sound = load_sound(event) if event in SOUNDS_ALL else _synth(event, rng)
    if event in SHUTTER_SOUNDS or event not in SYNTH_DISTRACTORS:
        sound = _pitch(sound, rng.uniform(0.92, 1.08))
    if positive:
        lo, hi = rng.uniform(80, 400), rng.uniform(9000, 20000)
        sound = _band(sound, lo, min(hi, 23000))
    sound = set_level(sound, speech_db + snr_db)
    start = rng.uniform(0.5, max(0.6, seconds - len(sound) / RATE - 0.3))
    i = int(start * RATE)
    sound = sound[: len(bed) - i]
    bed[i:i + len(sound)] += sound
    if opus:
        bed = opus_round_trip(bed, opus)
    labels = [Label("audio.shutter", start, start + len(sound) / RATE)] if positive else []
    return Clip(name or f"{split}-{event}", bed, split, event, labels, snr_db=snr_db, opus=opus)


def virtual_source_clip(rng: np.random.Generator, split: Split, *, virtual: bool,
                        seconds: float = 20.0, floor_dbfs: float = -60.0,
                        opus: int | None = None, name: str = "") -> Clip:
    """Speech with pauses: exact digital silence between sentences (a loopback or virtual
    microphone) or a room-noise floor at ``floor_dbfs`` (a real microphone)."""
    bed = speech_bed(rng, split, seconds)
    if not virtual:
        bed += room_noise(len(bed), rng, floor_dbfs, "pink" if rng.random() < 0.5 else "brown")
    if opus:
        bed = opus_round_trip(bed, opus)
    labels = [Label("audio.virtual_source", 0.0, seconds)] if virtual else []
    kind = "virtual" if virtual else "room"
    return Clip(name or f"{split}-{kind}", bed, split, kind, labels, opus=opus)


SOUNDS_ALL = frozenset(SHUTTER_SOUNDS + DISTRACTOR_SOUNDS)


def build_set(split: Split, seed: int | None = None, scale: int = 1) -> list[Clip]:
    """The evaluation clips of ``split`` (``scale`` multiplies how many of each there are).

    Shutter positives: both theme files, in speech, at -6..+6 dB (dev) or -10..+8 dB
    (held-out) relative to the speech, half of them after Opus. Negatives: every distractor
    once per ``scale`` under the same conditions. Virtual source: as many digital-silence
    clips as room-noise clips, floors -70..-45 dBFS, half after Opus.
    """
    rng = np.random.default_rng(seed if seed is not None else (1 if split == "dev" else 2))
    snr = (-10.0, 6.0) if split == "dev" else (-10.0, 8.0)
    clips: list[Clip] = []

    def conditions(k: int) -> dict[str, float | int | None]:
        return {"snr_db": float(rng.uniform(*snr)), "floor_dbfs": float(rng.uniform(-70, -45)),
                "opus": (None, 24_000, 32_000, 64_000)[k % 4]}

    k = 0
    for _ in range(6 * scale):
        for event in SHUTTER_SOUNDS:
            clips.append(shutter_clip(rng, split, event=event, positive=True,
                                      name=f"{split}-{event}-{k}", **conditions(k)))  # type: ignore[arg-type]
            k += 1
    for _ in range(scale):
        for event in DISTRACTOR_SOUNDS + SYNTH_DISTRACTORS * 3:
            clips.append(shutter_clip(rng, split, event=event, positive=False,
                                      name=f"{split}-{event}-{k}", **conditions(k)))  # type: ignore[arg-type]
            k += 1
    for _ in range(4 * scale):
        for virtual in (True, False):
            clips.append(virtual_source_clip(
                rng, split, virtual=virtual, floor_dbfs=float(rng.uniform(-70, -45)),
                opus=(None, 32_000)[k % 2], name=f"{split}-vs-{k}"))
            k += 1
    return clips
