"""TV-L1 optical flow in PyTorch, batched over frame pairs: OpenCV DualTVL1's algorithm.

The model is Zach, Pock and Bischof's duality-based TV-L1 (DAGM 2007) as implemented by
Sánchez, Meinhardt-Llopis and Facciolo (IPOL 2013) and ported to OpenCV contrib
(``optflow/tvl1flow.cpp``), whose defaults denseflow uses to extract the public data sets. Every
step follows that file, so the flow is OpenCV's up to float rounding, not a different flow:

- pyramid: ``resize(I, scaleStep)`` from the previous level, bilinear, sizes rounded; a level
  under 16 pixels ends it; the flow is carried up by bilinear resize to the finer size and /0.8;
- per scale, p = 0; per warp: I1, dI1/dx, dI1/dy (centred differences, replicated border)
  warped by bicubic ``remap`` (Keys a = -0.75, coordinates on OpenCV's 1/32 pixel grid,
  constant-0 border), then rho_c and |grad I1|^2;
- outer iterations start with a 5x5 median of u (replicated border); inner iterations:
  thresholding step TH (Sánchez Eq. 19-21), u = v + theta div p (Eq. 22), forward-difference
  gradient and the dual step p = (p + tau/theta grad u) / (1 + tau/theta |grad u|) (Eq. 23);
- the stopping rule: a warp ends when sum |u - u_prev|^2 <= epsilon^2 * pixels, checked after each
  inner iteration; here per pair (a converged pair's state is frozen for the rest of the warp,
  so batching does not change any pair's result).

Imports only torch and numpy, so GPU benchmarks run where nothing else is installed.
``fused=True`` compiles the inner iteration (the hot loop: 99 % of the time) with torch.compile.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

_CUBIC_A = -0.75  # OpenCV's interpolateCubic (Keys' kernel with a = -0.75)
_FLT_EPSILON = float(np.finfo(np.float32).eps)


@dataclass(frozen=True)
class TVL1Params:
    """OpenCV DualTVL1OpticalFlow's parameters and defaults (gamma = 0, no initial flow)."""

    tau: float = 0.25
    lambda_: float = 0.15
    theta: float = 0.3
    scales: int = 5
    scale_step: float = 0.8
    warps: int = 5
    epsilon: float = 0.01
    inner_iterations: int = 30
    outer_iterations: int = 10
    median_filtering: int = 5
    # Bicubic warping at exact coordinates, as OpenCV 5 (the version pinned here) remaps float
    # maps; 32 rounds them to 1/32 pixel first, as older OpenCV releases (INTER_TAB_SIZE) did.
    remap_subpixels: int | None = None

    def __post_init__(self) -> None:
        if self.median_filtering not in (0, 1, 3, 5):
            # OpenCV's medianBlur takes float images only with a 3 or 5 aperture.
            raise ValueError(f"median_filtering must be 0, 1, 3 or 5, not {self.median_filtering}")
        if self.scales < 1 or self.warps < 1 or not 0 < self.scale_step < 1:
            raise ValueError(f"invalid TV-L1 pyramid settings: {self}")


# --- OpenCV's resize (INTER_LINEAR) as two small matrices: out = Ry @ image @ Rx^T -------------

def _linear_resize_matrix(source: int, target: int, scale: float, device) -> torch.Tensor:
    """(target, source) weights of cv::resize's bilinear taps along one axis; ``scale`` is
    source/target as OpenCV uses it (1/fx when a factor is given, else the size ratio)."""
    position = (np.arange(target, dtype=np.float64) + 0.5) * scale - 0.5
    position = position.astype(np.float32)  # resize computes fx in float
    left = np.floor(position).astype(np.int64)
    fraction = (position - left).astype(np.float32)
    # Taps outside the image: all weight to the edge pixel (what OpenCV's clamping does).
    fraction[left < 0] = 0
    left[left < 0] = 0
    fraction[left >= source - 1] = 0
    left[left >= source - 1] = source - 1
    matrix = np.zeros((target, source), np.float32)
    rows = np.arange(target)
    np.add.at(matrix, (rows, left), np.float32(1) - fraction)
    np.add.at(matrix, (rows, np.minimum(left + 1, source - 1)), fraction)
    return torch.from_numpy(matrix).to(device)


def _resize(images: torch.Tensor, size: tuple[int, int], scale: tuple[float, float]) -> torch.Tensor:
    """Bilinear resize of (B, H, W) to ``size`` = (height, width), as cv::resize does."""
    height, width = images.shape[-2:]
    rows = _linear_resize_matrix(height, size[0], scale[0], images.device)
    cols = _linear_resize_matrix(width, size[1], scale[1], images.device)
    return rows @ (images @ cols.T)


def pyramid_sizes(height: int, width: int, params: TVL1Params = TVL1Params()) -> list[tuple[int, int]]:
    """(height, width) per scale, finest first, as DualTVL1::calc builds them."""
    sizes = [(height, width)]
    for _ in range(1, params.scales):
        h, w = sizes[-1]
        # Size() with factors: saturate_cast<int>(side * factor), i.e. rounded (half to even).
        size = (int(np.rint(h * params.scale_step)), int(np.rint(w * params.scale_step)))
        if size[0] < 16 or size[1] < 16:
            break
        sizes.append(size)
    return sizes


# --- the per-warp steps ------------------------------------------------------------------------

def _centered_gradient(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """tvl1flow.cpp centeredGradient: 0.5 (I[x+1] - I[x-1]), one-sided at the border."""
    padded = F.pad(image[:, None], (1, 1, 1, 1), mode="replicate")[:, 0]
    dx = 0.5 * (padded[:, 1:-1, 2:] - padded[:, 1:-1, :-2])
    dy = 0.5 * (padded[:, 2:, 1:-1] - padded[:, :-2, 1:-1])
    return dx, dy


def _cubic_weights(fraction: torch.Tensor) -> list[torch.Tensor]:
    """OpenCV's interpolateCubic(x) for taps at -1, 0, 1, 2."""
    a, x = _CUBIC_A, fraction
    w0 = ((a * (x + 1) - 5 * a) * (x + 1) + 8 * a) * (x + 1) - 4 * a
    w1 = ((a + 2) * x - (a + 3)) * x * x + 1
    w2 = ((a + 2) * (1 - x) - (a + 3)) * (1 - x) * (1 - x) + 1
    return [w0, w1, w2, 1 - w0 - w1 - w2]


def _remap_cubic(images: list[torch.Tensor], map_x: torch.Tensor, map_y: torch.Tensor,
                 subpixels: int | None = None) -> list[torch.Tensor]:
    """cv::remap(..., INTER_CUBIC, BORDER_CONSTANT 0) of several (B, H, W) images at one map."""
    batch, height, width = map_x.shape
    if subpixels:  # coordinates on a 1/subpixels grid, as OpenCV's fixed-point remap tables
        map_x = torch.round(map_x * subpixels) / subpixels
        map_y = torch.round(map_y * subpixels) / subpixels
    base_x, base_y = torch.floor(map_x), torch.floor(map_y)
    wx, wy = _cubic_weights(map_x - base_x), _cubic_weights(map_y - base_y)
    base_x, base_y = base_x.to(torch.int64), base_y.to(torch.int64)
    flat = [image.reshape(batch, height * width) for image in images]
    out = [torch.zeros_like(map_x) for _ in images]
    for i in range(4):
        y = base_y + (i - 1)
        y_ok = (y >= 0) & (y < height)
        for j in range(4):
            x = base_x + (j - 1)
            ok = y_ok & (x >= 0) & (x < width)  # taps outside the image read the border value 0
            index = (y.clamp(0, height - 1) * width + x.clamp(0, width - 1)).reshape(batch, -1)
            weight = torch.where(ok, wy[i] * wx[j], torch.zeros_like(map_x))
            for k, source in enumerate(flat):
                out[k] = out[k] + weight * torch.gather(source, 1, index).reshape(batch, height, width)
    return out


def _median(u: torch.Tensor, size: int) -> torch.Tensor:
    """cv::medianBlur of a float (B, H, W) image: exact median, replicated border."""
    pad = size // 2
    padded = F.pad(u[:, None], (pad, pad, pad, pad), mode="replicate")
    windows = F.unfold(padded, size)  # (B, size*size, H*W)
    return windows.median(dim=1).values.reshape(u.shape)


# --- the inner iteration (the hot loop) ------------------------------------------------------

def _forward_gradient(u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """forwardGradient: u[x+1] - u[x], 0 on the last column (dx) and last row (dy)."""
    dx = F.pad(u[:, :, 1:] - u[:, :, :-1], (0, 1))
    dy = F.pad(u[:, 1:, :] - u[:, :-1, :], (0, 0, 0, 1))
    return dx, dy


def _divergence(p1: torch.Tensor, p2: torch.Tensor) -> torch.Tensor:
    """divergence: backward differences with p = 0 before the first row and column."""
    return (p1 - F.pad(p1[:, :, :-1], (1, 0))) + (p2 - F.pad(p2[:, :-1, :], (0, 0, 1, 0)))


def inner_iteration(u1, u2, p11, p12, p21, p22, i1wx, i1wy, grad, rho_c, active,
                    l_t: float, theta: float, taut: float, stop: float):
    """One inner iteration for the pairs still ``active``; returns the new state and which
    pairs go on (their squared change is above ``stop``). Pairs not active are left as they are."""
    # estimateV: the thresholding step TH (Sánchez et al. Eq. 19-21)
    rho = rho_c + (i1wx * u1 + i1wy * u2)
    bound = l_t * grad
    safe = torch.where(grad > _FLT_EPSILON, grad, torch.ones_like(grad))
    fi = torch.where(grad > _FLT_EPSILON, -rho / safe, torch.zeros_like(grad))
    step = torch.where(rho < -bound, torch.full_like(rho, l_t),
                       torch.where(rho > bound, torch.full_like(rho, -l_t), fi))
    v1 = u1 + step * i1wx
    v2 = u2 + step * i1wy
    # estimateU (Eq. 22) and its squared change, the stopping rule's error
    new_u1 = v1 + theta * _divergence(p11, p12)
    new_u2 = v2 + theta * _divergence(p21, p22)
    error = ((new_u1 - u1) ** 2 + (new_u2 - u2) ** 2).sum(dim=(1, 2))
    # estimateDualVariables (Eq. 23) on the forward-difference gradient of the new u
    u1x, u1y = _forward_gradient(new_u1)
    u2x, u2y = _forward_gradient(new_u2)
    ng1 = 1.0 + taut * torch.hypot(u1x, u1y)
    ng2 = 1.0 + taut * torch.hypot(u2x, u2y)
    keep = active[:, None, None]
    return (
        torch.where(keep, new_u1, u1),
        torch.where(keep, new_u2, u2),
        torch.where(keep, (p11 + taut * u1x) / ng1, p11),
        torch.where(keep, (p12 + taut * u1y) / ng1, p12),
        torch.where(keep, (p21 + taut * u2x) / ng2, p21),
        torch.where(keep, (p22 + taut * u2y) / ng2, p22),
        active & (error > stop),
    )


_compiled_inner = None


def _fused_inner():
    """The inner iteration compiled once per process (a graph per pyramid size and batch)."""
    global _compiled_inner
    if _compiled_inner is None:
        import torch._dynamo

        # 5 scales x a few batch sizes: more shapes than dynamo's default cache keeps.
        config = torch._dynamo.config
        name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
        setattr(config, name, max(getattr(config, name), 64))
        _compiled_inner = torch.compile(inner_iteration, dynamic=False)
    return _compiled_inner


# --- the solver -------------------------------------------------------------------------------

class TVL1:
    """Batched TV-L1: ``TVL1()(previous, following)`` with (B, H, W) or (H, W) greyscale frames
    (uint8 0..255 or float on the same scale) gives (B, H, W, 2) float32 flow, x then y, in
    pixels, as ``cv2.optflow.DualTVL1OpticalFlow_create().calc`` does pair by pair.

    ``fused``: compile the inner iteration (torch.compile). ``check_every``: inner iterations
    between host checks of whether every pair of the batch has converged (exactness does not
    depend on it; the per-pair stopping rule runs on the device every iteration).
    """

    def __init__(self, params: TVL1Params = TVL1Params(), fused: bool = False, check_every: int = 10,
                 device: str | torch.device | None = None):
        self.params = params
        self.device = device
        self.fused = fused
        self.check_every = max(1, check_every)

    def __call__(self, previous, following) -> torch.Tensor:
        i0, i1 = _as_batch(previous), _as_batch(following)
        if i0.shape != i1.shape:
            raise ValueError(f"frame pairs differ in shape: {tuple(i0.shape)} and {tuple(i1.shape)}")
        if i0.shape[-1] < 16 or i0.shape[-2] < 16:
            raise ValueError(f"frames of {i0.shape[-1]}x{i0.shape[-2]} are too small for TV-L1 (>= 16x16)")
        with torch.no_grad():
            device = self.device if self.device is not None else i1.device
            return self._flow(i0.to(device), i1.to(device))

    def _flow(self, i0: torch.Tensor, i1: torch.Tensor) -> torch.Tensor:
        p = self.params
        sizes = pyramid_sizes(*i0.shape[-2:], params=p)
        factor = (1.0 / p.scale_step, 1.0 / p.scale_step)
        pyramid = [(i0, i1)]
        for size in sizes[1:]:
            pyramid.append((_resize(pyramid[-1][0], size, factor), _resize(pyramid[-1][1], size, factor)))
        u1 = torch.zeros_like(pyramid[-1][0])
        u2 = torch.zeros_like(u1)
        for s in range(len(sizes) - 1, -1, -1):
            u1, u2 = self._one_scale(*pyramid[s], u1, u2)
            if s == 0:
                break
            (h, w), (fine_h, fine_w) = sizes[s], sizes[s - 1]
            scale = (h / fine_h, w / fine_w)
            # The flow carried to the finer scale, in its pixels (tvl1flow.cpp: resize, * 1/0.8).
            u1 = _resize(u1, (fine_h, fine_w), scale) * np.float32(1 / p.scale_step)
            u2 = _resize(u2, (fine_h, fine_w), scale) * np.float32(1 / p.scale_step)
        return torch.stack([u1, u2], dim=-1)

    def _one_scale(self, i0, i1, u1, u2):
        p = self.params
        batch, height, width = i0.shape
        stop = float(np.float32(p.epsilon * p.epsilon * height * width))
        l_t, taut = float(np.float32(p.lambda_ * p.theta)), float(np.float32(p.tau / p.theta))
        theta = float(np.float32(p.theta))
        step = _fused_inner() if self.fused else inner_iteration
        i1x, i1y = _centered_gradient(i1)
        rows = torch.arange(height, dtype=i0.dtype, device=i0.device)[None, :, None]
        cols = torch.arange(width, dtype=i0.dtype, device=i0.device)[None, None, :]
        p11, p12, p21, p22 = (torch.zeros_like(u1) for _ in range(4))
        for _ in range(p.warps):
            i1w, i1wx, i1wy = _remap_cubic([i1, i1x, i1y], cols + u1, rows + u2, p.remap_subpixels)
            grad = i1wx * i1wx + i1wy * i1wy
            rho_c = i1w - i1wx * u1 - i1wy * u2 - i0
            active = torch.ones(batch, dtype=torch.bool, device=i0.device)
            for _ in range(p.outer_iterations):
                if p.median_filtering > 1:
                    keep = active[:, None, None]
                    u1 = torch.where(keep, _median(u1, p.median_filtering), u1)
                    u2 = torch.where(keep, _median(u2, p.median_filtering), u2)
                for n in range(p.inner_iterations):
                    u1, u2, p11, p12, p21, p22, active = step(
                        u1, u2, p11, p12, p21, p22, i1wx, i1wy, grad, rho_c, active, l_t, theta, taut, stop)
                    if (n + 1) % self.check_every == 0 and not bool(active.any()):
                        break
                if not bool(active.any()):
                    break
        return u1, u2


def _as_batch(frames) -> torch.Tensor:
    tensor = torch.as_tensor(np.asarray(frames) if not torch.is_tensor(frames) else frames)
    if tensor.dim() == 2:
        tensor = tensor[None]
    if tensor.dim() != 3:
        raise ValueError(f"expected greyscale frames (H, W) or (B, H, W), got shape {tuple(tensor.shape)}")
    return tensor.to(torch.float32)


def end_point_error(flow: np.ndarray | torch.Tensor, reference: np.ndarray | torch.Tensor) -> float:
    """Mean end-point error, |f - g| averaged over pixels (and pairs), in pixels."""
    a = torch.as_tensor(np.asarray(flow, np.float32) if not torch.is_tensor(flow) else flow).float().cpu()
    b = torch.as_tensor(np.asarray(reference, np.float32) if not torch.is_tensor(reference) else reference).float().cpu()
    return float(torch.linalg.vector_norm(a - b, dim=-1).mean())


def projected_hours(pairs_per_second: float, frames: float = 2.5e6) -> float:
    """Hours to extract flow for ``frames`` frames (about one pair each) at a measured rate."""
    return frames / pairs_per_second / 3600.0 if pairs_per_second > 0 else math.inf
