"""``monitor.mediafile.gray_picture``: the luma the video detectors see, read from the
decoder's Y plane instead of a colour conversion. Checked against OpenCV's BGR-to-gray of
the same frame converted to BGR by FFmpeg (swscale), for the formats decoders produce.
Pictures: scikit-image's shipped photographs (the same as the video corpus), made odd-sized
so that the planes carry row padding."""

from __future__ import annotations

import av
import cv2
import numpy as np
import pytest

from monitor.mediafile import gray_picture
from tests.media import corpus_video as corpus


def _photo(width: int, height: int) -> np.ndarray:
    return cv2.resize(corpus.astronaut_head(), (width, height), interpolation=cv2.INTER_AREA)


def _reference(frame: av.VideoFrame, max_width: int | None) -> np.ndarray:
    bgr = frame.to_ndarray(format="bgr24")
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    if max_width is not None and frame.width > max_width:
        nh = max(2, round(frame.height * max_width / frame.width / 2) * 2)
        gray = cv2.resize(gray, (max_width, nh), interpolation=cv2.INTER_AREA)
    return gray


@pytest.mark.parametrize("fmt", ["yuv420p", "yuvj420p", "yuv444p", "nv12", "rgb24",
                                 "yuv420p10le", "gray"])
@pytest.mark.parametrize("size,max_width", [((322, 242), None), ((646, 482), 320)])
def test_matches_a_colour_conversion_within_rounding(
        fmt: str, size: tuple[int, int], max_width: int | None) -> None:
    bgr = _photo(*size)
    frame = av.VideoFrame.from_ndarray(bgr, format="bgr24").reformat(format=fmt)
    got = gray_picture(frame, max_width)
    want = _reference(frame, max_width)
    assert got.shape == want.shape and got.dtype == np.uint8
    assert got.flags["C_CONTIGUOUS"]
    diff = got.astype(np.int16) - want
    # swscale's own conversion is about one level darker than the BT.601 expansion; a
    # picture read wrongly (range not expanded, padding in the rows, chroma taken for
    # luma) is off by far more than this
    assert abs(float(diff.mean())) < 2.0, fmt
    assert float(np.abs(diff).mean()) < 2.5, fmt
    assert np.percentile(np.abs(diff), 99) <= 6, fmt


def test_limited_range_is_expanded_to_full_range() -> None:
    black, white = np.zeros((32, 48, 3), np.uint8), np.full((32, 48, 3), 255, np.uint8)
    for bgr, level in ((black, 0), (white, 255)):
        frame = av.VideoFrame.from_ndarray(bgr, format="bgr24").reformat(format="yuv420p")
        y = int(np.frombuffer(frame.planes[0], np.uint8)[0])
        assert abs(y - (16 if level == 0 else 235)) <= 1  # stored as TV range (swscale: 234)
        assert abs(int(gray_picture(frame)[5, 5]) - level) <= 1


def test_the_picture_outlives_the_frame_buffer() -> None:
    frame = av.VideoFrame.from_ndarray(_photo(64, 48), format="bgr24").reformat(format="yuv420p")
    got = gray_picture(frame)
    before = got.copy()
    np.frombuffer(frame.planes[0], np.uint8)[:] = 0  # the decoder reusing its buffer
    assert np.array_equal(got, before)
