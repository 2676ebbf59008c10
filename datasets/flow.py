"""Optical flow between consecutive frames, and its quantisation to 8-bit images.

``tvl1`` is the paper's method (OpenCV contrib DualTVL1, about 1.6 s per 320x256 pair on a
2-core CPU); ``farneback`` is ~80x faster and good enough for quick runs. Flow is stored as
two greyscale JPEGs per pair, x and y, as denseflow does:

    v = round((clip(f, -bound, bound) + bound) * 255 / (2 * bound))     0..255

and the loaders map v back to v / 127.5 - 1, i.e. flow / bound in [-1, 1].

TV-L1 has two backends: OpenCV's on the CPU (``opencv-cpu``), and the batched PyTorch port of
the same algorithm in ``flow_tvl1`` (``torch-cuda``, its inner iteration compiled; ``torch-cpu``
for tests), which ``auto`` picks when a GPU is visible.
"""
from __future__ import annotations

import cv2
import numpy as np

FLOW_METHODS = ("tvl1", "farneback")
DEFAULT_FLOW_BOUND = 20.0  # pixels per frame; denseflow's default
FLOW_BACKENDS = ("auto", "opencv", "torch")  # what to ask for
RESOLVED_BACKENDS = ("opencv-cpu", "torch-cuda", "torch-cpu")  # what runs (and is recorded)
TORCH_FLOW_BATCH = {"torch-cuda": 64, "torch-cpu": 8}  # frame pairs per call


def resolve_flow_backend(method: str | None, backend: str = "auto", gpu_visible: bool | None = None) -> str | None:
    """Which backend computes ``method``'s flow: ``auto`` is torch-cuda for TV-L1 when a GPU is
    visible (``gpu_visible``, default: torch sees CUDA), else opencv-cpu; None without flow."""
    if method is None:
        return None
    if backend in RESOLVED_BACKENDS:
        return backend
    if backend not in FLOW_BACKENDS:
        raise ValueError(f"unknown flow backend {backend!r}; choose one of {list(FLOW_BACKENDS)}")
    if backend == "opencv" or (method != "tvl1" and backend == "auto"):
        return "opencv-cpu"
    if method != "tvl1":
        raise ValueError(f"only tvl1 has a torch backend, not {method!r}; use --flow-backend opencv or auto")
    if gpu_visible is None:
        import torch

        gpu_visible = torch.cuda.is_available()
    if backend == "torch":
        return "torch-cuda" if gpu_visible else "torch-cpu"
    return "torch-cuda" if gpu_visible else "opencv-cpu"


class FlowEstimator:
    """Dense flow from one greyscale frame to the next: (height, width, 2) float32, x then y."""

    def __init__(self, method: str = "tvl1", backend: str = "opencv-cpu"):
        if method not in FLOW_METHODS:
            raise ValueError(f"unknown flow method {method!r}; choose one of {list(FLOW_METHODS)}")
        self.method = method
        self.backend = resolve_flow_backend(method, backend)
        self.batch_size = TORCH_FLOW_BATCH.get(self.backend, 1)  # pairs that many() takes at once
        self._torch = None
        if self.backend.startswith("torch"):
            from vidistill.datasets.flow_tvl1 import TVL1

            cuda = self.backend == "torch-cuda"
            self._torch = TVL1(fused=cuda, device="cuda" if cuda else "cpu")
        # OpenCV's TV-L1 defaults are the ones denseflow uses to extract the public datasets.
        self._tvl1 = cv2.optflow.DualTVL1OpticalFlow_create() if method == "tvl1" and not self._torch else None

    def many(self, previous: list[np.ndarray], following: list[np.ndarray]) -> np.ndarray:
        """(N, height, width, 2) flow of N frame pairs; the torch backend does them as a batch."""
        if self._torch is not None:
            return self._torch(np.stack(previous), np.stack(following)).cpu().numpy()
        return np.stack([self(a, b) for a, b in zip(previous, following)])

    def __call__(self, previous: np.ndarray, following: np.ndarray) -> np.ndarray:
        if self._torch is not None:
            return self.many([previous], [following])[0]
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
