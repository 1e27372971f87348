"""Unit tests of the video detectors' parts: parameters, episodes, frames, hashes, ONNX hook."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from signals.errors import ConfigError, MediaError
from signals.media.detection import Detection
from signals.media.episodes import Episode
from signals.media.frames import BarTrim, find_bars
from signals.media.loop import hamming, phash
from signals.media.objects import ObjectDetector, parse_detections
from signals.media.params import (
    BarParams,
    MediaParams,
    ObjectParams,
    SyntheticParams,
    VideoParams,
    load_media_params,
    media_params_from_dict,
)
from signals.media.synthetic import NoiseCheck, estimate_noise, temporal_noise
from signals.media.video import VideoAnalyzer
from tests.media import corpus_video as corpus


def test_shipped_config_equals_builtin_defaults() -> None:
    params = load_media_params()
    assert params.video == VideoParams()


def test_params_from_dict_overrides_and_rejects_typos() -> None:
    p = media_params_from_dict({"video": {"frozen": {"min_s": 5}}, "audio": {"batch_s": 0.2}})
    assert p.video.frozen.min_s == 5 and p.audio == {"batch_s": 0.2}
    with pytest.raises(ConfigError, match="audio parameters: batch_sz"):  # checked here too
        media_params_from_dict({"audio": {"batch_sz": 0.2}})
    with pytest.raises(ConfigError, match=r"video\.frozen\.min_secs"):
        media_params_from_dict({"video": {"frozen": {"min_secs": 5}}})
    with pytest.raises(ConfigError, match="greater than 0"):
        media_params_from_dict({"video": {"cheap_fps": 0}})
    with pytest.raises(ConfigError):
        media_params_from_dict(["not", "a", "mapping"])  # type: ignore[arg-type]


def test_analyzer_accepts_the_video_mapping() -> None:
    a = VideoAnalyzer({"cheap_fps": 2, "frozen": {"min_s": 4}})
    assert a.params.cheap_fps == 2 and a.params.frozen.min_s == 4
    with pytest.raises(ConfigError, match="cheap_fsp"):
        VideoAnalyzer({"cheap_fsp": 2})


def test_load_media_params_merges_audio_file(tmp_path: Path) -> None:
    (tmp_path / "media_audio.yaml").write_text("audio:\n  batch_s: 0.1\n  max_jump_s: 0.2\n")
    (tmp_path / "media.yaml").write_text(
        "audio_file: media_audio.yaml\naudio:\n  max_jump_s: 0.3\n")
    assert load_media_params(tmp_path / "media.yaml").audio == {"batch_s": 0.1, "max_jump_s": 0.3}
    (tmp_path / "broken.yaml").write_text("video: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_media_params(tmp_path / "broken.yaml")
    with pytest.raises(ConfigError, match="cannot read"):
        load_media_params(tmp_path / "missing.yaml")


@pytest.mark.parametrize(("text", "included", "needle"), [
    ("audio_file: gone.yaml\n", None, "cannot read audio parameters {dir}/gone.yaml"),
    ("audio_file: list.yaml\n", "- 1\n- 2\n",
     "audio parameters {dir}/list.yaml (the audio_file of {dir}/media.yaml) must be a mapping"),
    ("audio_file: 5\n", None, "media parameters {dir}/media.yaml: audio_file must be a file name"),
    ('audio_file: "a\\0b"\n', None, "cannot read audio parameters '{dir}/a\\x00b': not a usable"),
    ("audio_file: a.yaml\naudio: [1, 2]\n", "{}\n",
     "media parameters {dir}/media.yaml: audio must be a mapping"),
    ("audio: [1, 2]\n", None, "media parameters {dir}/media.yaml: audio: "),
    ("audio_file: a.yaml\n", "shutterr: {enabled: false}\n",
     "media parameters {dir}/media.yaml: audio parameters: shutterr: "),
])
def test_audio_file_problems_name_the_file(tmp_path: Path, text: str, included: str | None,
                                           needle: str) -> None:
    (tmp_path / "media.yaml").write_text(text)
    if included is not None:
        for name in ("list.yaml", "a.yaml"):
            (tmp_path / name).write_text(included)
    with pytest.raises(ConfigError) as caught:
        load_media_params(tmp_path / "media.yaml")
    assert needle.format(dir=tmp_path) in str(caught.value)


@pytest.mark.parametrize(("text", "needle"), [
    ("video:\n  faces:\n    interval_s: .inf\n",
     "video.faces.interval_s: Input should be a finite"),
    ("audio:\n  shutter:\n    min_level_dbfs: .nan\n",
     "shutter.min_level_dbfs: Input should be a finite"),
])
def test_media_parameters_are_finite(tmp_path: Path, text: str, needle: str) -> None:
    """An infinite interval passed every "> 0" check (a detector that then never runs)."""
    (tmp_path / "media.yaml").write_text(text)
    with pytest.raises(ConfigError, match=needle):
        load_media_params(tmp_path / "media.yaml")


def test_episode_needs_min_duration_and_bridges_short_gaps() -> None:
    ep = Episode("video.frozen", min_s=2.0, gap_s=0.5)
    assert ep.update(True, 0.0) == []
    assert ep.update(True, 1.0) == []
    opened = ep.update(True, 2.0, 0.8, {"k": 1})
    assert [(d.t, d.end, d.evidence["episode"]) for d in opened] == [(0.0, None, "open")]
    assert ep.update(False, 2.4) == []           # within the gap: still going
    assert ep.update(True, 2.8) == []
    closed = ep.update(False, 3.5)
    assert [(d.t, d.end, d.evidence["episode"]) for d in closed] == [(0.0, 2.8, "closed")]
    assert ep.update(True, 4.0) == [] and ep.update(False, 5.0) == []   # too short: nothing
    assert ep.finish(6.0) == []


def test_episode_finish_closes_at_stream_end() -> None:
    ep = Episode("video.obscured", min_s=2.0, gap_s=0.5)
    for t in (0.0, 1.0, 2.0):
        ep.update(True, t, since=-0.5 if t == 0.0 else None)
    [d] = ep.finish(2.2)
    assert (d.t, d.end) == (-0.5, 2.2)


@pytest.mark.parametrize("bad", [
    np.zeros((240, 320, 3), np.float32),
    np.zeros((240, 320, 4), np.uint8),
    np.zeros((8, 8, 3), np.uint8),
    "not a frame",
])
def test_bad_frames_are_clear_errors(bad: object) -> None:
    with pytest.raises(MediaError, match="video frame"):
        VideoAnalyzer().push(bad, 0.0)  # type: ignore[arg-type]


def test_frames_of_any_size_and_gray_are_accepted() -> None:
    a = VideoAnalyzer()
    a.push(np.zeros((1080, 1920, 3), np.uint8), 0.0)
    a.push(np.zeros((120, 160), np.uint8), 0.5)
    a.push(np.zeros((100, 100, 3), np.uint8), 1.0)
    assert a.frames_analysed == 3


def test_frames_are_chosen_by_time() -> None:
    a = VideoAnalyzer(MediaParams())
    frame = np.full((240, 320, 3), 128, np.uint8)
    for i in range(30):                           # 30 fps for one second
        a.push(frame, i / 30)
    # cheap checks at 5 fps: due at 0, 0.2, 0.4 … and taken up to a quarter period early
    # (0, 5/30, 11/30, 17/30, 23/30, 29/30)
    assert a.frames_analysed == 6
    assert not a.wants(1.1) and a.wants(1.16)     # the next is due at 1.2


@pytest.mark.parametrize(("fps", "jitter", "expected"), [
    (5, 0.02, 50),    # the SDK's 5 fps, each frame up to 20 ms early or late: every one
    (10, 0.02, 50),   # every other picture
    (30, 0.0, 50),    # a file: every 6th
    (25, 0.0, 50),
    (7.5, 0.0, 50),   # a webcam slowed down by poor light: 5 fps, not every other (38)
])
def test_jittered_frames_are_analysed_at_cheap_fps(fps: float, jitter: float,
                                                   expected: int) -> None:
    """A 5 fps stream whose capture times wobble (a browser's camera, an encoder dropping to
    its maximum frame rate) is analysed at 5 fps, not at half of it; faster streams at 5 fps,
    never faster on average."""
    a = VideoAnalyzer(MediaParams())
    frame = np.full((120, 160), 128, np.uint8)
    rng = np.random.default_rng(3)
    n = round(10 * fps)                           # ten seconds
    for i in range(n):
        a.push(frame, max(0.0, i / fps + rng.uniform(-jitter, jitter)))
    assert abs(a.frames_analysed - expected) <= 1


def test_phash_is_stable_under_noise_and_changes_with_content() -> None:
    rng = np.random.default_rng(1)
    img = np.asarray(cv2.cvtColor(corpus.astronaut_head(), cv2.COLOR_BGR2GRAY), np.uint8)
    noisy = np.clip(img + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8)
    other = np.asarray(cv2.cvtColor(corpus.empty_room(), cv2.COLOR_BGR2GRAY), np.uint8)
    assert hamming(phash(img), phash(noisy)) <= 4
    assert hamming(phash(img), phash(other)) >= 16


def test_noise_estimate_separates_sensor_noise_from_clean_content() -> None:
    rng = np.random.default_rng(2)
    slide = np.asarray(cv2.cvtColor(corpus.screen_slide(1), cv2.COLOR_BGR2GRAY), np.uint8)
    noisy = np.clip(slide + rng.normal(0, 3, slide.shape), 0, 255).astype(np.uint8)
    clean_sigma, frac = estimate_noise(slide, 12.0)
    noisy_sigma, _ = estimate_noise(noisy, 12.0)
    assert frac > 0.3
    assert clean_sigma < 0.1 < 2.0 < noisy_sigma


def _fixed_output_model(path: Path, size: int, rows: list[tuple[list[float], int, float]]) -> None:
    """A tiny ONNX graph whose output is a fixed YOLOv8-style tensor [1, 84, N]."""
    det = np.zeros((1, 84, len(rows)), np.float32)
    for i, (box, cls, score) in enumerate(rows):
        det[0, :4, i] = box
        det[0, 4 + cls, i] = score
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["m"], keepdims=0),
        helper.make_node("Mul", ["m", "zero"], ["z"]),
        helper.make_node("Add", ["det", "z"], ["output0"]),
    ]
    graph = helper.make_graph(
        nodes, "fixed",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 84, len(rows)])],
        initializer=[numpy_helper.from_array(det, "det"),
                     numpy_helper.from_array(np.zeros((1,), np.float32), "zero")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def test_object_hook_flags_a_large_phone(tmp_path: Path) -> None:
    model = tmp_path / "phone.onnx"
    # a big "cell phone" box (class 67) and a small "person" box (class 0)
    _fixed_output_model(model, 64, [([32, 32, 30, 40], 67, 0.9), ([10, 10, 4, 4], 0, 0.8)])
    params = VideoParams(objects=ObjectParams(model=str(model), input_size=64))
    a = VideoAnalyzer(params)
    frame = corpus.clip_person(0, dur=3.0).frames
    found = []
    for i, f in enumerate(frame):
        found += a.push(f, i / corpus.FPS)
    found += a.finish(3.0)
    phone = [d for d in found if d.signal == "video.phone"]
    assert [d.evidence["episode"] for d in phone] == ["open", "closed"]
    assert phone[-1].confidence == pytest.approx(0.9, abs=1e-3)
    assert phone[-1].evidence["area_fraction"] == pytest.approx(30 * 40 / 64**2, abs=1e-3)


def test_only_the_object_model_needs_colour(tmp_path: Path) -> None:
    model = tmp_path / "phone.onnx"
    _fixed_output_model(model, 64, [([32, 32, 30, 40], 67, 0.9)])
    assert not VideoAnalyzer(VideoParams()).wants_colour
    with_model = VideoAnalyzer(VideoParams(objects=ObjectParams(model=str(model), input_size=64)))
    assert with_model.wants_colour
    # a gray picture still reaches a three-channel model (as three equal channels)
    det = ObjectDetector(ObjectParams(model=str(model), input_size=64))
    held, score, _ = det.phone(np.full((240, 320), 128, np.uint8))
    assert held and score == pytest.approx(0.9, abs=1e-3)


def test_object_hook_ignores_small_or_other_classes(tmp_path: Path) -> None:
    model = tmp_path / "nophone.onnx"
    _fixed_output_model(model, 64, [([32, 32, 4, 4], 67, 0.9), ([32, 32, 40, 40], 0, 0.95)])
    det = ObjectDetector(ObjectParams(model=str(model), input_size=64))
    held, score, _ = det.phone(np.zeros((240, 320, 3), np.uint8))
    assert not held and score == 0.0


def test_object_hook_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        VideoAnalyzer(VideoParams(objects=ObjectParams(model=str(tmp_path / "none.onnx"))))
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00not a model")
    with pytest.raises(ConfigError, match="could not be loaded"):
        ObjectDetector(ObjectParams(model=str(junk)))
    with pytest.raises(ConfigError, match="84 or 85"):
        parse_detections(np.zeros((1, 10, 7), np.float32), 64, 67)


def test_yolov5_layout_is_parsed() -> None:
    rows = np.zeros((1, 3, 85), np.float32)
    rows[0, 1, :5] = [32, 32, 32, 32, 0.8]
    rows[0, 1, 5 + 67] = 0.9
    [_, (score, area), _] = parse_detections(rows, 64, 67)
    assert score == pytest.approx(0.72) and area == pytest.approx(0.25)


class _CountingCascade:
    """Wraps a cascade and counts its ``detectMultiScale`` calls, and among them the
    small-face searches (the calls with a ``maxSize``)."""

    def __init__(self, inner: cv2.CascadeClassifier) -> None:
        self.inner = inner
        self.calls = 0
        self.small_calls = 0

    def detectMultiScale(self, img: np.ndarray, **kw: object) -> object:
        self.calls += 1
        self.small_calls += "maxSize" in kw
        return self.inner.detectMultiScale(img, **kw)


def test_profile_cascade_runs_only_periodically_in_an_empty_picture() -> None:
    from signals.media.faces import FaceDetector
    from signals.media.params import FaceParams

    det = FaceDetector(FaceParams(profile_every=3))
    counting = _CountingCascade(det._profile)
    det._profile = counting  # type: ignore[assignment]
    empty = cv2.cvtColor(corpus.empty_room(), cv2.COLOR_BGR2GRAY)
    counts = [det.count(empty) for _ in range(6)]
    assert counts == [0] * 6
    # runs 3 and 6 only, each in both directions (not on every run of an empty picture)
    assert counting.calls == 4


def test_profile_cascade_runs_when_the_frontal_count_drops() -> None:
    from signals.media.faces import FaceDetector
    from signals.media.params import FaceParams

    det = FaceDetector(FaceParams(profile_every=0 + 100))
    counting = _CountingCascade(det._profile)
    det._profile = counting  # type: ignore[assignment]
    det._last = 1  # a face was counted last time; the frontal cascade now finds none
    empty = cv2.cvtColor(corpus.empty_room(), cv2.COLOR_BGR2GRAY)
    assert det.count(empty) == 0
    assert counting.calls == 2
    assert det.count(empty) == 0
    assert counting.calls == 2  # nothing counted any more: no extra profile runs


class _ScriptedCascade:
    """Stands in for the frontal cascade: returns the given boxes run by run, so a test can
    make it miss a face that is still in the picture."""

    def __init__(self, script: list[list[tuple[int, int, int, int]]]) -> None:
        self.script = list(script)
        self.calls = 0

    def detectMultiScale(self, img: np.ndarray, **kw: object) -> object:
        self.calls += 1
        return self.script.pop(0)


# The astronaut photograph (scikit-image) as the corpus frames it: the real frontal cascade
# finds the face at this box on the picture downscaled to 240 wide.
_ASTRONAUT_BOX = (84, 40, 62, 62)


def _tracker(script: list[list[tuple[int, int, int, int]]]) -> object:
    from signals.media.faces import FaceDetector
    from signals.media.params import FaceParams

    # tilt_degrees=0, small_face_frac=0, full_every=1: the scripted cascade answers one call
    # per run, on the whole picture
    det = FaceDetector(FaceParams(profile_every=0, track_hold_runs=2, tilt_degrees=0,
                                  small_face_frac=0, full_every=1))
    det._frontal = _ScriptedCascade(script)  # type: ignore[assignment]
    return det


def _astronaut_gray() -> np.ndarray:
    return cv2.cvtColor(corpus.astronaut_head(), cv2.COLOR_BGR2GRAY)


def test_real_cascade_finds_the_astronaut_where_the_tracking_tests_assume() -> None:
    from signals.media.faces import FaceDetector
    from signals.media.params import FaceParams

    det = FaceDetector(FaceParams())
    assert det.count(_astronaut_gray()) == 1
    assert _iou_boxes(det.tracks[0].box, _ASTRONAUT_BOX) > 0.9


def _iou_boxes(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    from signals.media.faces import _iou

    return _iou(a, b)


def test_a_face_found_twice_is_held_through_missed_runs_while_still_in_view() -> None:
    det = _tracker([[_ASTRONAUT_BOX]] * 3 + [[]] * 4)
    gray = _astronaut_gray()
    counts = [det.count(gray) for _ in range(6)]  # type: ignore[attr-defined]
    assert counts == [1, 1, 1, 1, 1, 0]  # two missed runs held, the third is not


def test_a_face_found_by_fewer_runs_is_never_held() -> None:
    # a false box on a still background matches its own picture perfectly: only faces found
    # by track_min_hits (3) runs are held, so a box seen twice cannot stretch into an episode
    det = _tracker([[_ASTRONAUT_BOX], [_ASTRONAUT_BOX], [], []])
    gray = _astronaut_gray()
    assert [det.count(gray) for _ in range(3)] == [1, 1, 0]  # type: ignore[attr-defined]


def test_a_held_face_is_dropped_once_the_person_has_left() -> None:
    det = _tracker([[_ASTRONAUT_BOX]] * 3 + [[]])
    gray = _astronaut_gray()
    empty = cv2.resize(cv2.cvtColor(corpus.empty_room(), cv2.COLOR_BGR2GRAY),
                       (gray.shape[1], gray.shape[0]))
    assert [det.count(gray) for _ in range(3)] == [1, 1, 1]  # type: ignore[attr-defined]
    assert det.count(empty) == 0  # type: ignore[attr-defined]


def test_a_face_found_again_soon_after_its_hold_ran_out_keeps_its_history() -> None:
    """A face the cascade flickers on (found, three runs missed, found once, missed twice:
    seen through VP8 at some positions) was counted 0 for most of it and raised
    ``video.no_person`` with the person in view: found again, it started over as a face
    seen once, never held. Re-found where it was and still looking the same, it keeps its
    history and is held through the next misses."""
    det = _tracker([[_ASTRONAUT_BOX]] * 4 + [[]] * 3 + [[_ASTRONAUT_BOX]] + [[]] * 3)
    gray = _astronaut_gray()
    counts = [det.count(gray) for _ in range(11)]  # type: ignore[attr-defined]
    assert counts == [1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 0]


def test_a_box_found_where_a_dropped_face_was_but_unlike_it_starts_over() -> None:
    """The person left and something else is found where the face was (a false box on
    the background): it does not inherit the face's history, so it is not held."""
    det = _tracker([[_ASTRONAUT_BOX]] * 4 + [[]] * 3 + [[_ASTRONAUT_BOX]] + [[]])
    gray = _astronaut_gray()
    empty = cv2.resize(cv2.cvtColor(corpus.empty_room(), cv2.COLOR_BGR2GRAY),
                       (gray.shape[1], gray.shape[0]))
    counts = [det.count(gray) for _ in range(7)]  # type: ignore[attr-defined]
    assert counts == [1, 1, 1, 1, 1, 1, 0]
    assert det.count(empty) == 1  # type: ignore[attr-defined]  # the scripted false box
    assert det.count(empty) == 0  # type: ignore[attr-defined]  # not held


def test_tracking_follows_a_moving_face_between_runs() -> None:
    det = _tracker([[_ASTRONAUT_BOX]])
    gray = _astronaut_gray()
    det.count(gray)  # type: ignore[attr-defined]
    shifted = np.ascontiguousarray(np.roll(gray, 24, axis=1))  # 24 px right at 384 wide
    det.follow(shifted)  # type: ignore[attr-defined]
    x = det.tracks[0].box[0]  # type: ignore[attr-defined]
    assert abs(x - (_ASTRONAUT_BOX[0] + 24 * 240 / 384)) <= 1


def _turned(gray: np.ndarray, angle: float) -> np.ndarray:
    h, w = gray.shape
    turn = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    return cv2.warpAffine(gray, turn, (w, h), borderMode=cv2.BORDER_REPLICATE)


@pytest.mark.parametrize("angle", [-28.0, 28.0])
def test_a_head_tilted_to_one_side_is_still_counted(angle: float) -> None:
    from signals.media.faces import FaceDetector
    from signals.media.params import FaceParams

    tilted = _turned(_astronaut_gray(), angle)
    assert FaceDetector(FaceParams(profile_every=0, tilt_degrees=0)).count(tilted) == 0
    det = FaceDetector(FaceParams(profile_every=0))
    assert det.count(tilted) == 1
    # the box is turned back onto the face: its centre is where the face's centre went
    h, w = tilted.shape
    x, y, bw, bh = _ASTRONAUT_BOX
    scale = w / 240  # _ASTRONAUT_BOX is at the 240-wide working size
    turn = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    cx, cy = turn @ np.array([(x + bw / 2) * scale, (y + bh / 2) * scale, 1.0])
    tx, ty, tw, th = det.tracks[0].box
    assert abs((tx + tw / 2) * scale - cx) < 0.25 * bw * scale
    assert abs((ty + th / 2) * scale - cy) < 0.25 * bh * scale


def test_the_tilted_search_runs_only_when_nothing_was_found() -> None:
    det = _tracker([[_ASTRONAUT_BOX], [], [], []])
    det.p = det.p.model_copy(update={"tilt_degrees": 20.0})  # type: ignore[attr-defined]
    gray = _astronaut_gray()
    assert det.count(gray) == 1  # type: ignore[attr-defined]
    assert det._frontal.calls == 1  # type: ignore[attr-defined]
    assert det.count(gray) == 0  # type: ignore[attr-defined]
    assert det._frontal.calls == 4  # type: ignore[attr-defined]  # upright, +20, -20


def test_a_tilted_box_near_a_corner_is_kept_inside_the_picture() -> None:
    # a box in the corner of the turned picture turns back to partly outside the upright
    # one; it must stay inside, or its tracking template would be empty or wrapped around
    det = _tracker([[], [(0, 0, 40, 40)], [(0, 0, 40, 40)]])
    det.p = det.p.model_copy(update={"tilt_degrees": 20.0})  # type: ignore[attr-defined]
    gray = _astronaut_gray()
    assert det.count(gray) == 2  # type: ignore[attr-defined]
    h, w = round(gray.shape[0] * 240 / gray.shape[1]), 240
    for track in det.tracks:  # type: ignore[attr-defined]
        x, y, bw, bh = track.box
        assert x >= 0 and y >= 0 and x + bw <= w and y + bh <= h
        assert track.template.shape == (bh, bw)
    det.follow(gray)  # type: ignore[attr-defined]


def _picture(rng: np.random.Generator, h: int = 240, w: int = 320) -> np.ndarray:
    return rng.integers(40, 220, (h, w), dtype=np.uint8)


def test_find_bars_measures_black_edges() -> None:
    rng = np.random.default_rng(3)
    pic = _picture(rng)
    assert find_bars(pic, 24, 0.4) == (0, 0, 0, 0)
    pic[:30] = 0
    pic[-20:] = 24                      # at the limit still counts as black
    pic[:, :50] = 10
    pic[:, -50:] = 3
    assert find_bars(pic, 24, 0.4) == (30, 20, 50, 50)
    colour = np.repeat(pic[..., None], 3, axis=2)
    assert find_bars(colour, 24, 0.4) == (30, 20, 50, 50)
    pic[:, 100] = 0                      # a dark column inside the picture is not a bar
    assert find_bars(pic, 24, 0.4) == (30, 20, 50, 50)
    pic[-20:] = 25
    assert find_bars(pic, 24, 0.4)[1] == 0


def test_find_bars_leaves_a_black_or_mostly_black_picture_whole() -> None:
    assert find_bars(np.zeros((240, 320), np.uint8), 24, 0.4) == (0, 0, 0, 0)
    pic = np.zeros((240, 320), np.uint8)
    pic[100:140, 60:260] = 128           # only 17 % of the rows are picture: not bars
    assert find_bars(pic, 24, 0.4) == (0, 0, 60, 60)
    assert find_bars(pic, 24, 0.1) == (100, 100, 60, 60)


def test_bar_trim_holds_its_trim_until_a_new_one_is_steady() -> None:
    rng = np.random.default_rng(4)
    trim = BarTrim(BarParams(hold_frames=3))
    plain = _picture(rng)
    barred = plain.copy()
    barred[:, :40] = 0
    barred[:, -40:] = 0
    assert trim(plain).shape == (240, 320)
    assert trim(barred).shape == (240, 320)          # once: held as it was
    assert trim(barred).shape == (240, 320)
    out = trim(barred)                               # the third picture in a row
    assert out.shape == (240, 240) and np.shares_memory(out, barred)
    assert np.array_equal(out, barred[:, 40:280])
    wobble = barred.copy()
    wobble[:, 40] = 0                                # a bar one pixel wider: the same bar
    assert trim(wobble).shape == (240, 240)
    assert trim(plain).shape == (240, 240)           # bars gone for a moment: still held
    for _ in range(3):
        out = trim(plain)
    assert out.shape == (240, 320)
    trim(barred)
    trim(barred)
    assert trim(np.zeros((120, 160), np.uint8)).shape == (120, 160)  # a new size: no bars
    assert BarTrim(BarParams(enabled=False))(barred).shape == (240, 320)



def _plateaus(rng: np.random.Generator, sigma: float) -> np.ndarray:
    """Flat areas (all but their edges judged by the noise estimate) with ``sigma`` of noise."""
    base = np.full((240, 320), 100.0)
    base[:, 160:] = 160
    base[60:120, 40:100] = 70
    return np.clip(np.round(base + rng.normal(0, sigma, base.shape)), 0, 255).astype(np.uint8)


def _moved(picture: np.ndarray, i: int) -> np.ndarray:
    """``picture`` moved 2 px to the right per step, as a still image a virtual camera
    pans over: its pixels, noise included, travel with it."""
    return np.roll(picture, 2 * i, axis=1)


@pytest.mark.parametrize("first,last,strength", [(0.0, 0.4, "strong"), (0.4, 0.0, "weak")])
def test_synthetic_strength_is_worded_from_the_whole_episode(first: float, last: float,
                                                             strength: str) -> None:
    # clean pictures (0.85 each) then weak ones (about 0.45), or the other way round: the
    # words follow the episode's mean confidence, not its last picture. The weak ones are
    # one still picture moving (its noise does not change between pictures).
    rng = np.random.default_rng(6)
    still = {s: _plateaus(rng, s) for s in (first, last)}
    analyzer = VideoAnalyzer()
    out = []
    for i in range(100):
        out += analyzer.push(_moved(still[first if i < 80 else last], i), i / 10)
    out += analyzer.finish(10.0)
    [closed] = [d for d in out if d.signal == "video.synthetic_source" and d.end is not None]
    assert (closed.confidence >= 0.6) == (strength == "strong")
    assert closed.evidence["strength"] == strength
    assert ("note" in closed.evidence) == (strength == "weak")


def test_temporal_noise_tells_new_noise_from_a_moved_picture() -> None:
    rng = np.random.default_rng(8)
    still = _plateaus(rng, 0.4)
    # the same pixels moved: nothing new (the shift is found and undone)
    assert temporal_noise(still, _moved(still, 3), 12.0) == pytest.approx(0.0, abs=0.05)
    # a camera: new noise in each picture, however little of it survives spatially
    fresh = temporal_noise(_plateaus(rng, 2.0), _plateaus(rng, 2.0), 12.0)
    assert fresh is not None and 1.2 < fresh < 2.5
    assert temporal_noise(still, still[:200], 12.0) is None  # sizes differ
    busy = rng.integers(0, 256, (240, 320), dtype=np.uint8)
    assert temporal_noise(busy, busy, 12.0) is None  # nothing flat to measure on


def _weak_stream(rng: np.random.Generator, fresh: bool, seconds: float = 10.0,
                 **synthetic: float) -> list[Detection]:
    """10 pictures a second in the weak band of the noise estimate (sigma about 0.4): new
    noise in each (a camera smoothed by a codec) or one still picture moving."""
    analyzer = VideoAnalyzer({"synthetic": synthetic})
    still = _plateaus(rng, 0.4)
    out: list[Detection] = []
    for i in range(int(seconds * 10)):
        out += analyzer.push(_plateaus(rng, 0.4) if fresh else _moved(still, i), i / 10)
    return out + analyzer.finish(seconds)


def test_weak_pictures_whose_noise_is_new_each_time_are_a_camera() -> None:
    rng = np.random.default_rng(9)
    assert [d for d in _weak_stream(rng, fresh=True)
            if d.signal == "video.synthetic_source"] == []
    [closed] = [d for d in _weak_stream(rng, fresh=False)
                if d.signal == "video.synthetic_source" and d.end is not None]
    assert closed.evidence["strength"] == "weak"
    assert 0 <= closed.evidence["temporal_sigma"] < 0.6
    # max_temporal_sigma 0 turns the temporal check off: the spatial estimate alone decides
    off = [d for d in _weak_stream(rng, fresh=True, max_temporal_sigma=0.0)
           if d.signal == "video.synthetic_source" and d.end is not None]
    assert len(off) == 1 and "temporal_sigma" not in off[0].evidence


def test_a_weak_picture_needs_its_predecessor() -> None:
    check = NoiseCheck(SyntheticParams())
    still = _plateaus(np.random.default_rng(10), 0.4)
    verdicts = [check.judge(_moved(still, i), _moved(still, i - 1) if i else None)[0]
                for i in range(5)]
    # the first has no predecessor; the median needs temporal_pictures (3) in a row
    assert verdicts == [None, None, None, True, True]
    check.forget()
    assert check.judge(_moved(still, 6), _moved(still, 5))[0] is None


def test_a_frozen_weak_picture_is_frozen_not_synthetic() -> None:
    # one picture repeated has no new noise either, but video.frozen explains that
    rng = np.random.default_rng(11)
    still = _plateaus(rng, 0.4)
    analyzer = VideoAnalyzer()
    out: list[Detection] = []
    for i in range(100):
        out += analyzer.push(still, i / 10)
    out += analyzer.finish(10.0)
    signals = {d.signal for d in out}
    assert "video.frozen" in signals and "video.synthetic_source" not in signals


def _sitting_back(face_frac: float, dx: int = 0) -> np.ndarray:
    """The corpus's empty room, 320x240, with the astronaut's head pasted small enough that
    her face is ``face_frac`` of the picture's width (the face is a quarter of the head
    picture's width): someone sitting back from the camera."""
    room = cv2.cvtColor(cv2.resize(corpus.empty_room(), (320, 240)), cv2.COLOR_BGR2GRAY)
    head = _astronaut_gray()
    width = round(320 * face_frac / 0.25)
    small = cv2.resize(head, (width, round(width * head.shape[0] / head.shape[1])),
                       interpolation=cv2.INTER_AREA)
    y, x = 120 - small.shape[0] // 2, 160 - width // 2 + dx
    room[y:y + small.shape[0], x:x + width] = small
    return room


@pytest.mark.parametrize("face_frac", [0.13, 0.10])
def test_a_face_too_small_for_the_normal_search_is_still_counted(face_frac: float) -> None:
    from signals.media.faces import FaceDetector
    from signals.media.params import FaceParams

    for dx in (-40, 0, 40):
        picture = _sitting_back(face_frac, dx)
        assert FaceDetector(FaceParams(small_face_frac=0)).count(picture) == 0
        det = FaceDetector(FaceParams())
        assert det.count(picture) == 1
        # the box is in the 240-wide working picture's coordinates, on the face
        x, _, w, _ = det.tracks[0].box
        assert 0.6 * face_frac * 240 < w < 1.6 * face_frac * 240
        assert abs((x + w / 2) * 320 / 240 - (160 + dx)) < w


def test_the_small_face_search_finds_nothing_in_an_empty_room() -> None:
    from signals.media.faces import FaceDetector
    from signals.media.params import FaceParams

    room = cv2.cvtColor(cv2.resize(corpus.empty_room(), (320, 240)), cv2.COLOR_BGR2GRAY)
    rng = np.random.default_rng(12)
    det = FaceDetector(FaceParams())
    for _ in range(5):
        noisy = np.clip(room + rng.normal(0, 3, room.shape), 0, 255).astype(np.uint8)
        assert det.count(noisy) == 0


@pytest.mark.parametrize("present,searches", [(False, 3), (True, 6)])
def test_the_small_face_search_skips_every_other_run_while_it_finds_nothing(
        present: bool, searches: int) -> None:
    from signals.media.faces import FaceDetector
    from signals.media.params import FaceParams

    det = FaceDetector(FaceParams(profile_every=0, tilt_degrees=0))
    counting = _CountingCascade(det._frontal)
    det._frontal = counting  # type: ignore[assignment]
    picture = _sitting_back(0.11) if present else cv2.cvtColor(
        cv2.resize(corpus.empty_room(), (320, 240)), cv2.COLOR_BGR2GRAY)
    counts = [det.count(picture) for _ in range(6)]
    assert counting.small_calls == searches
    # a face found is searched for again at the next run (and so tracked); an empty room
    # is looked at every other run
    assert counts == ([1] * 6 if present else [0] * 6)


class _ScriptedWithSmall(_ScriptedCascade):
    """The scripted frontal cascade, answering the small-face searches (``maxSize``) with
    nothing and counting them."""

    def __init__(self, script: list[list[tuple[int, int, int, int]]]) -> None:
        super().__init__(script)
        self.small_calls = 0

    def detectMultiScale(self, img: np.ndarray, **kw: object) -> object:
        if "maxSize" in kw:
            self.small_calls += 1
            return []
        return super().detectMultiScale(img, **kw)


def test_no_small_face_search_while_a_face_the_normal_search_found_is_held() -> None:
    # A miss of a face that was just there (a turn, a blur) is held by its track; the
    # dearest search would only look for a face that did not shrink. It costs about 75 ms,
    # and ran at every such blip in the live-call benchmark (9.2 -> 10.8 % of a core a call).
    from signals.media.faces import FaceDetector
    from signals.media.params import FaceParams

    det = FaceDetector(FaceParams(profile_every=0, track_hold_runs=2, tilt_degrees=0,
                                  full_every=1))
    cascade = _ScriptedWithSmall([[_ASTRONAUT_BOX]] * 3 + [[]] * 4)
    det._frontal = cascade  # type: ignore[assignment]
    gray = _astronaut_gray()
    counts = [det.count(gray) for _ in range(7)]
    # found three times, then held through two missed runs, then gone
    assert counts == [1, 1, 1, 1, 1, 0, 0]
    # no small search while the track is there; once it is gone, the search looks
    assert cascade.small_calls == 1


class _ShapeCascade(_CountingCascade):
    """The real cascade, recording the size of each picture it searched."""

    def __init__(self, inner: cv2.CascadeClassifier) -> None:
        super().__init__(inner)
        self.shapes: list[tuple[int, ...]] = []

    def detectMultiScale(self, img: np.ndarray, **kw: object) -> object:
        self.shapes.append(img.shape)
        return super().detectMultiScale(img, **kw)


def test_a_steadily_found_face_is_searched_for_around_it_between_whole_picture_runs() -> None:
    # the whole 240-wide picture costs the frontal cascade about 10 ms, the region around a
    # face about 2: a face found by three runs in a row is looked for only there, and the
    # whole picture every full_every-th run (someone arriving is found there)
    from signals.media.faces import FaceDetector
    from signals.media.params import FaceParams

    det = FaceDetector(FaceParams(profile_every=0, full_every=3))
    cascade = _ShapeCascade(det._frontal)
    det._frontal = cascade  # type: ignore[assignment]
    gray = _astronaut_gray()
    assert [det.count(gray) for _ in range(7)] == [1] * 7
    whole = (180, 240)
    assert [s == whole for s in cascade.shapes] == [True, True, True, False, False, True,
                                                    False]
    assert all(s[0] * s[1] < 0.4 * 180 * 240 for s in cascade.shapes if s != whole)


def _two_astronauts() -> np.ndarray:
    """Two frontal faces side by side (the astronaut and her mirror image), each a quarter
    of the picture's width."""
    half = _astronaut_gray()[:, 84:284]  # 200 wide around her face (100 wide)
    return np.ascontiguousarray(np.hstack([half, half[:, ::-1]]))


def test_a_second_person_arriving_is_counted_by_the_next_whole_picture_run() -> None:
    # the price of the search around a steady face: someone arriving next to it is found by
    # the next whole-picture run, up to full_every - 1 runs (seconds) later
    from signals.media.faces import FaceDetector
    from signals.media.params import FaceParams

    two = _two_astronauts()
    one = two.copy()
    one[:, 200:] = int(np.median(two))  # the second one not there yet
    det = FaceDetector(FaceParams(profile_every=0, full_every=3))
    assert [det.count(one) for _ in range(3)] == [1, 1, 1]
    assert FaceDetector(FaceParams(profile_every=0)).count(two) == 2
    # runs 4 and 5 look around the first face only; run 6 looks at the whole picture
    assert [det.count(two) for _ in range(4)] == [1, 1, 2, 2]


def test_a_steady_face_missed_once_waits_for_a_second_miss_before_the_dear_searches() -> None:
    # the cascade flickers on some faces through a codec: a face found last run and held by
    # its track costs no profile or tilted search at a single miss (about 50 ms); a second
    # miss in a row runs them as before
    from signals.media.faces import FaceDetector
    from signals.media.params import FaceParams

    det = FaceDetector(FaceParams(profile_every=100, full_every=1, track_hold_runs=2,
                                  small_face_frac=0))
    frontal = _ScriptedCascade([[_ASTRONAUT_BOX]] * 3 + [[]] * 10)
    profile = _CountingCascade(det._profile)
    det._frontal, det._profile = frontal, profile  # type: ignore[assignment]
    gray = _astronaut_gray()
    assert [det.count(gray) for _ in range(3)] == [1, 1, 1]
    assert det.count(gray) == 1  # held
    assert (frontal.calls, profile.calls) == (4, 0)  # the upright frontal search only
    assert det.count(gray) == 1  # held again: now profile (both ways) and tilted (+/-)
    assert (frontal.calls, profile.calls) == (7, 2)


class _SideCascade(_CountingCascade):
    """The real profile cascade, recording each picture it searched."""

    def __init__(self, inner: cv2.CascadeClassifier) -> None:
        super().__init__(inner)
        self.pictures: list[np.ndarray] = []

    def detectMultiScale(self, img: np.ndarray, **kw: object) -> object:
        self.pictures.append(img.copy())
        return super().detectMultiScale(img, **kw)


def test_the_periodic_profile_search_beside_a_frontal_face_looks_one_way_at_a_time() -> None:
    # every counted face found by the frontal search: the periodic profile run only looks
    # for someone arriving in profile, one way (as is, mirrored) per run: about 15 ms instead
    # of 30 every third second; each way is looked at every sixth run
    from signals.media.faces import FaceDetector
    from signals.media.params import FaceParams

    det = FaceDetector(FaceParams(profile_every=3, full_every=1))
    profile = _SideCascade(det._profile)
    det._profile = profile  # type: ignore[assignment]
    gray = _astronaut_gray()
    assert [det.count(gray) for _ in range(6)] == [1] * 6
    assert profile.calls == 2
    first, second = profile.pictures
    assert np.array_equal(first[:, ::-1], second) or np.array_equal(first, second[:, ::-1])
    # nothing counted: both ways at each periodic run, as before
    # (test_profile_cascade_runs_only_periodically_in_an_empty_picture)
