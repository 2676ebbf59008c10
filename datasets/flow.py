"""Optical flow between consecutive frames, and its quantisation to 8-bit images.

``tvl1`` is the paper's method (OpenCV contrib DualTVL1, about 1.6 s per 320x256 pair on a
2-core CPU); ``farneback`` is ~80x faster and good enough for quick runs. Flow is stored as
two greyscale JPEGs per pair, x and y, as denseflow does:

    v = round((clip(f, -bound, bound) + bound) * 255 / (2 * bound))     0..255

and the loaders map v back to v / 127.5 - 1, i.e. flow / bound in [-1, 1].
"""
from __future__ import annotations

import cv2
import numpy as np

FLOW_METHODS = ("tvl1", "farneback")
DEFAULT_FLOW_BOUND = 20.0  # pixels per frame; denseflow's default


class FlowEstimator:
    """Dense flow from one greyscale frame to the next: (height, width, 2) float32, x then y."""

    def __init__(self, method: str = "tvl1"):
        if method not in FLOW_METHODS:
            raise ValueError(f"unknown flow method {method!r}; choose one of {list(FLOW_METHODS)}")
        self.method = method
        # OpenCV's TV-L1 defaults are the ones denseflow uses to extract the public datasets.
        self._tvl1 = cv2.optflow.DualTVL1OpticalFlow_create() if method == "tvl1" else None

    def __call__(self, previous: np.ndarray, following: np.ndarray) -> np.ndarray:
        if self._tvl1 is not None:
            return self._tvl1.calc(previous, following, None)
        return cv2.calcOpticalFlowFarneback(
            previous, following, None,
            pyr_scale=0.5, levels=3, winsize=15, iterations=3, poly_n=5, poly_sigma=1.2, flags=0,
        )


def quantise_flow(flow: np.ndarray, bound: float) -> tuple[np.ndarray, np.ndarray]:
    """The x and y 8-bit images of a (height, width, 2) flow field."""
    scaled = (np.clip(flow, -bound, bound) + bound) * (255.0 / (2.0 * bound))
    values = np.rint(scaled).astype(np.uint8)
    return values[..., 0], values[..., 1]


def dequantise_flow(values: np.ndarray, bound: float) -> np.ndarray:
    """Flow in pixels per frame from stored 8-bit values (the inverse of quantise_flow,
    up to the rounding step bound / 127.5)."""
    return (values.astype(np.float32) / 127.5 - 1.0) * bound
