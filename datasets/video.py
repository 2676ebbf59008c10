"""Encoded video files, through PyAV (FFmpeg): reading resampled to a fixed rate and size,
and writing (for the synthetic benchmark).

PyAV reads whatever FFmpeg reads (H.264 .mp4, MPEG-4 part 2 .avi as UCF101/HMDB51 ship, VP9
.webm, MJPEG...), which DALI's CPU video reader does not (it refuses H.264, HEVC, MPEG-4 part 2).
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator

import av
import numpy as np

from vidistill.datasets.errors import VideoDecodeError

# codec name -> (FFmpeg encoder, pixel format, file extension)
CODECS: dict[str, tuple[str, str, str]] = {
    "mpeg4": ("mpeg4", "yuv420p", ".avi"),
    "h264": ("libx264", "yuv420p", ".mp4"),
    "vp9": ("libvpx-vp9", "yuv420p", ".webm"),
    "mjpeg": ("mjpeg", "yuvj420p", ".avi"),
}

# A container declaring more frames than decode, beyond this slack, is reported as truncated.
# Slack because edit lists and B-frame reordering legitimately lose a frame or two.
_TRUNCATION_SLACK_FRAMES = 2


_TIME_EPSILON = 1e-6


def _snapper(stream, rate: float):
    """Seconds of a timestamp, put back on the stream's frame grid when it is within one tick
    of it: containers round times to their time base (1 ms in WebM), so 30 fps frame 14 says
    0.467 s instead of 0.4667 s, which would shift it past an output time."""
    tick = float(stream.time_base or 0)

    def seconds(time: float) -> float:
        nearest = round(time * rate) / rate
        return nearest if abs(time - nearest) <= tick else time

    return seconds


def _frames_before(end: float, fps: float) -> int:
    """How many output frames k / fps fall before ``end`` seconds."""
    count = 0
    while count / fps < end - _TIME_EPSILON:
        count += 1
    return count


def read_resampled(
    path: Path | str, fps: float, width: int, height: int, threads: int = 1
) -> Iterator[np.ndarray]:
    """RGB frames (height, width, 3) uint8 of a video, resampled to ``fps`` by timestamp.

    Output frame k shows the source frame on screen at time k / fps (the latest one whose
    timestamp is <= k / fps), so a video of duration D gives ceil(D * fps) frames whatever its
    own rate. Frames are resized to width x height (aspect ratio not kept: Sec. 3.6 uses
    320x256 for every dataset). Raises VideoDecodeError for unreadable, corrupt or truncated
    files.
    """
    path = Path(path)
    _refuse_empty(path)
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as error:
        raise VideoDecodeError(path, f"cannot open: {error}") from None
    with container:
        if not container.streams.video:
            raise VideoDecodeError(path, "no video stream")
        stream = container.streams.video[0]
        stream.thread_count = threads
        source_rate = stream.average_rate or stream.guessed_rate or Fraction(fps)
        declared = stream.frames
        step = 1.0 / fps
        seconds = _snapper(stream, float(source_rate))
        emitted = decoded = 0
        held = None
        held_time = first_time = 0.0

        def convert(frame) -> np.ndarray:
            return frame.to_ndarray(
                width=width, height=height, format="rgb24", interpolation="AREA"
            )

        try:
            for frame in container.decode(stream):
                time = seconds(frame.time) if frame.time is not None else decoded / float(source_rate)
                if decoded == 0:
                    first_time = time
                time -= first_time
                if held is not None:
                    image = None
                    while emitted * step < time - _TIME_EPSILON:
                        image = convert(held) if image is None else image
                        yield image
                        emitted += 1
                held, held_time = frame, time
                decoded += 1
        except av.error.FFmpegError as error:
            raise VideoDecodeError(path, f"decoding failed after {decoded} frames: {error}") from None
        if held is None:
            raise VideoDecodeError(path, "no decodable frames (empty or corrupt file)")
        end = held_time + 1.0 / float(source_rate)
        if declared and declared - decoded > _TRUNCATION_SLACK_FRAMES:
            raise VideoDecodeError(
                path, f"truncated: decoded {decoded} of the {declared} frames the container declares"
            )
        # Containers without a frame count (WebM) still declare a duration.
        declared_s = float(container.duration) / av.time_base if container.duration else 0.0
        if declared_s - end > _TRUNCATION_SLACK_FRAMES / float(source_rate):
            raise VideoDecodeError(
                path, f"truncated: decoded {end:.2f} s of the {declared_s:.2f} s the container declares"
            )
        image = None
        while emitted * step < end - _TIME_EPSILON:
            image = convert(held) if image is None else image
            yield image
            emitted += 1


@dataclass(frozen=True)
class ResampledIndex:
    """Which source frame (presentation order) read_resampled shows as each output frame."""

    codec: str
    source_frames: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.source_frames)


def _refuse_empty(path: Path) -> None:
    """A 0-byte file is said to be one, not reported as FFmpeg's "Invalid data found"."""
    try:
        empty = path.stat().st_size == 0
    except OSError:
        return  # av.open reports a missing or unreadable file
    if empty:
        raise VideoDecodeError(path, "empty file (0 bytes)")


def resampled_index(path: Path | str, fps: float) -> ResampledIndex:
    """The resampling of a video from packet timestamps alone (demuxing, no decoding), for
    decoders that take frame numbers (DALI's). Raises VideoDecodeError if it cannot be read."""
    path = Path(path)
    _refuse_empty(path)
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            codec = stream.codec_context.name
            rate = float(stream.average_rate or stream.guessed_rate or fps)
            seconds = _snapper(stream, rate)
            times = sorted(
                seconds(float(packet.pts * stream.time_base))
                for packet in container.demux(stream)
                if packet.pts is not None and packet.size
            )
    except (av.error.FFmpegError, OSError, IndexError) as error:
        raise VideoDecodeError(path, f"cannot read: {error}") from None
    if not times:
        raise VideoDecodeError(path, "no frames")
    first = times[0]
    times = [t - first for t in times]
    count = _frames_before(times[-1] + 1.0 / rate, fps)
    # output k shows the latest frame whose time is <= k / fps (as read_resampled does)
    sources = tuple(
        max(bisect.bisect_right(times, k / fps + _TIME_EPSILON) - 1, 0) for k in range(count)
    )
    return ResampledIndex(codec, sources)


def resampled_length(path: Path | str, fps: float) -> int:
    """How many frames read_resampled yields for a video, without decoding it."""
    return len(resampled_index(path, fps))


def probe(path: Path | str) -> dict:
    """Codec, rate, size and declared frame count of a video's first video stream."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return {
            "codec": stream.codec_context.name,
            "fps": float(stream.average_rate or stream.guessed_rate or 0),
            "width": stream.codec_context.width,
            "height": stream.codec_context.height,
            "frames": stream.frames,
        }


def write_video(
    path: Path | str, frames: Iterable[np.ndarray], fps: float, codec: str = "mpeg4"
) -> Path:
    """Encode RGB uint8 frames (height, width, 3; even sizes) into a real video file."""
    if codec not in CODECS:
        raise ValueError(f"unknown codec {codec!r}; choose one of {sorted(CODECS)}")
    encoder, pixel_format, _ = CODECS[codec]
    path = Path(path)
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), mode="w") as container:
        stream = None
        for image in frames:
            if stream is None:
                height, width = image.shape[:2]
                stream = container.add_stream(encoder, rate=rate)
                stream.width, stream.height, stream.pix_fmt = width, height, pixel_format
                stream.codec_context.thread_count = 1  # same bytes for the same frames
                if codec == "h264":
                    stream.options = {"crf": "18", "preset": "veryfast"}
                elif codec == "vp9":
                    stream.options = {"crf": "24", "b": "0", "deadline": "realtime", "cpu-used": "8"}
                else:
                    stream.bit_rate = 4_000_000
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        if stream is None:
            raise ValueError(f"no frames to write to {path}")
        for packet in stream.encode():
            container.mux(packet)
    return path
