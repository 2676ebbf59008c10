"""CUDA-graph replay of a model's inference forward (issue 18: the student at RGB speed at batch 1).

Batch-1 inference of I3D is launch-bound on a GPU: hundreds of small kernels, each waiting on
Python and the launch queue (measured on an H200: eager student/plain 1.11-1.13; replaying one
graph of the whole forward 3.6x faster, student/plain 1.025). `GraphedInference` captures one
graph per input shape (and dtype, device, autocast state) into static input and output buffers,
then each call copies the input in and replays it.

    runner = GraphedInference(model.eval())
    with torch.inference_mode():
        output = runner(clips)          # a ModelOutput, the same as model(clips)

Off CUDA (or with `enabled=False`) a call is `model(x)` itself: the CPU path is the eager one.
The model must be in eval mode (training draws Gumbel and dropout noise, which a replayed
graph would freeze) and its weights must not change between calls (the graph reads them in
place; loading new weights into the same tensors is fine).
"""
from __future__ import annotations

import torch

from vidistill.trainers.models.attention import AttentionMap, ModelOutput

WARMUP_CALLS = 3  # eager calls on a side stream before capture: cuDNN picks its algorithms, allocations settle


def clone_output(output: ModelOutput) -> ModelOutput:
    """A copy that the next replay (which overwrites the static outputs) leaves alone."""
    maps = {name: AttentionMap(m.log_probs.clone(), m.weights.clone(), m.probabilistic)
            for name, m in output.attention.items()}
    return ModelOutput(output.logits.clone(), output.features.clone(), maps)


class GraphedInference:
    """`model`'s forward replayed from CUDA graphs on CUDA inputs, eager elsewhere."""

    def __init__(self, model: torch.nn.Module, enabled: bool | None = None):
        if model.training:
            raise ValueError("graph replay is for inference: call model.eval() first (training draws "
                             "Gumbel and dropout noise that a replayed graph would freeze)")
        self.model = model
        self.enabled = torch.cuda.is_available() if enabled is None else enabled
        self._graphs: dict[tuple, tuple] = {}

    @property
    def in_channels(self) -> int:
        return self.model.in_channels

    def _key(self, x: torch.Tensor) -> tuple:
        autocast = torch.is_autocast_enabled("cuda")
        return tuple(x.shape), x.dtype, x.device, autocast, torch.get_autocast_dtype("cuda") if autocast else None

    def replays(self, x: torch.Tensor) -> bool:
        """Whether a call on `x` replays a graph: on CUDA, enabled."""
        return self.enabled and x.is_cuda

    def captured(self, x: torch.Tensor) -> bool:
        """Whether a call on `x` runs without capturing first (always, where it does not replay)."""
        return not self.replays(x) or self._key(x) in self._graphs

    def __call__(self, x: torch.Tensor) -> ModelOutput:
        if not self.replays(x):
            return self.model(x)
        key = self._key(x)
        if key not in self._graphs:
            self._graphs[key] = self._capture(x)
        graph, static_input, static_output = self._graphs[key]
        static_input.copy_(x)
        graph.replay()
        return clone_output(static_output)

    def _capture(self, x: torch.Tensor) -> tuple:
        static_input = x.clone()
        side = torch.cuda.Stream(device=x.device)
        side.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(side):
            for _ in range(WARMUP_CALLS):
                self.model(static_input)
        torch.cuda.current_stream(x.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_output = self.model(static_input)
        return graph, static_input, static_output


def graphed(model: torch.nn.Module, device: torch.device) -> torch.nn.Module | GraphedInference:
    """What evaluation and prediction run: graph replay on CUDA, the model itself elsewhere."""
    return GraphedInference(model) if device.type == "cuda" and torch.cuda.is_available() else model
