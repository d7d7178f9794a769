"""The TAPS gland network's ONNX graph run with PyTorch instead of onnxruntime.

Why: the project installs plain onnxruntime (CPU only; onnxruntime-gpu is a separate build
that would conflict with it), so without this runner the gland network never used a GPU;
PyTorch runs it on the GPU the detector uses. On a CPU with native bfloat16 arithmetic it
runs the convolutions in bfloat16 (below), which onnxruntime's CPU provider does not. The 9
windows of ProstateX-0000 on 2 idle cores: 19.8 CPU-s in bfloat16, 36.1 in float32, 39.5 with
onnxruntime (README, "Speed and memory").

The graph is read with the `onnx` package (never executed as code: only its operators listed
below are run) and evaluated node by node. Two patterns of the exported graph are run as the
one PyTorch operator they were exported from:
- GroupNorm: Reshape to (N, G, -1), InstanceNormalization with unit scale and zero bias,
  Reshape back to the input's shape, Mul by γ, Add β;
- Mish: Softplus, Tanh, Mul by the Softplus input.
Any other operator, or an attribute this runner does not implement (asymmetric padding,
auto_pad), raises ModelError; the caller then runs the graph with onnxruntime.

Precision: on a CPU with native bfloat16 arithmetic (AMX or AVX512-BF16, as oneDNN reports it)
the convolutions run under bfloat16 autocast by default, everything else in float32: on
ProstateX-0000 the gland then differs from onnxruntime's float32 one in 17 of about 45 000
voxels (Dice 0.99984), for about half the CPU time. `precision="float32"` gives the float32
result (2 voxels differ from onnxruntime's). On a GPU the network runs in float32.

It offers the two methods of an onnxruntime session the sliding window uses
(`get_inputs()[0].name`, `run(None, feeds)`), so either runs the same windows.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import ModelError, ParameterError

PRECISIONS = ("auto", "float32", "bfloat16")


def cpu_has_native_bfloat16() -> bool:
    """Whether oneDNN runs bfloat16 natively on this CPU (emulated bfloat16 would be slower)."""
    import torch

    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


@dataclass
class _Step:
    op: str  # "conv", "conv_transpose", "group_norm", "mish", "add", "mul", "tanh", "softplus"
    inputs: list[str]
    output: str
    params: dict = field(default_factory=dict)


@dataclass(frozen=True)
class _Input:
    name: str


def _attributes(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _conv_params(node, kind: str) -> dict:
    attrs = _attributes(node)
    if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise ModelError(f"gland model: {kind} node {node.name!r} uses auto_pad, which this runner does not implement.")
    pads = list(attrs.get("pads", [0, 0, 0, 0, 0, 0]))
    half = len(pads) // 2
    if pads[:half] != pads[half:]:
        raise ModelError(f"gland model: {kind} node {node.name!r} has asymmetric padding {pads}.")
    params = {"stride": tuple(attrs.get("strides", [1, 1, 1])), "padding": tuple(pads[:half]),
              "dilation": tuple(attrs.get("dilations", [1, 1, 1])), "groups": int(attrs.get("group", 1))}
    if kind == "ConvTranspose":
        if "output_shape" in attrs:
            raise ModelError(f"gland model: ConvTranspose node {node.name!r} sets output_shape, "
                             "which this runner does not implement.")
        params["output_padding"] = tuple(attrs.get("output_padding", [0, 0, 0]))
    return params


class OnnxTorchNetwork:
    """An ONNX graph of Conv / ConvTranspose / GroupNorm / Mish / Add / Mul / Tanh / Softplus
    nodes, run with PyTorch on `device` ("cpu", "cuda:0" …)."""

    def __init__(self, path: Path, device: str = "cpu", precision: str = "auto"):
        import torch

        if precision not in PRECISIONS:
            raise ParameterError(f"gland network precision must be one of {', '.join(PRECISIONS)}, got {precision!r}.")
        self.path = Path(path)
        self.device = torch.device(device)
        if precision == "auto":
            precision = "bfloat16" if self.device.type == "cpu" and cpu_has_native_bfloat16() else "float32"
        self.precision = precision
        graph = _load_graph(self.path)
        self.constants: dict[str, "torch.Tensor"] = {}
        from onnx import numpy_helper

        for tensor in graph.initializer:
            self.constants[tensor.name] = torch.from_numpy(numpy_helper.to_array(tensor).copy())
        for node in graph.node:
            if node.op_type == "Constant":
                value = _attributes(node).get("value")
                if value is None:
                    raise ModelError(f"gland model: Constant node {node.name!r} has no tensor value.")
                self.constants[node.output[0]] = torch.from_numpy(numpy_helper.to_array(value).copy())
        inputs = [i.name for i in graph.input if i.name not in self.constants]
        if len(inputs) != 1 or len(graph.output) != 1:
            raise ModelError(f"gland model {self.path}: expected one input and one output, found "
                             f"{len(inputs)} and {len(graph.output)}.")
        self.input_name, self.output_name = inputs[0], graph.output[0].name
        self.steps = self._plan(graph)
        self.constants = {k: v.to(self.device) for k, v in self.constants.items()}
        self._last_use = self._last_uses()

    # -- planning: the graph's nodes as steps, exported patterns fused back --------------------

    def _plan(self, graph) -> list[_Step]:
        consumers: dict[str, list] = defaultdict(list)
        for node in graph.node:
            for name in node.input:
                consumers[name].append(node)
        shape_of = {node.output[0]: node.input[0] for node in graph.node if node.op_type == "Shape"}

        def only(name: str, op: str):
            users = consumers.get(name, [])
            return users[0] if len(users) == 1 and users[0].op_type == op else None

        done: set[int] = set()
        steps: list[_Step] = []
        for node in graph.node:
            if id(node) in done or node.op_type in ("Constant", "Shape"):
                continue
            fused = self._group_norm(node, only, shape_of) or self._mish(node, only)
            if fused is not None:
                step, nodes = fused
                steps.append(step)
                done.update(id(n) for n in nodes)
                continue
            steps.append(self._single(node))
        return steps

    def _constant(self, name: str):
        return self.constants.get(name)

    def _group_norm(self, node, only, shape_of):
        if node.op_type != "Reshape":
            return None
        shape = self._constant(node.input[1])
        norm = only(node.output[0], "InstanceNormalization")
        if shape is None or shape.numel() != 3 or int(shape[0]) != 0 or int(shape[2]) != -1 or norm is None:
            return None
        scale, bias = self._constant(norm.input[1]), self._constant(norm.input[2])
        back = only(norm.output[0], "Reshape")
        if scale is None or bias is None or not bool((scale == 1).all()) or not bool((bias == 0).all()) \
                or back is None or shape_of.get(back.input[1]) != node.input[0]:
            return None
        mul = only(back.output[0], "Mul")
        gamma = self._constant(mul.input[1]) if mul is not None else None
        add = only(mul.output[0], "Add") if gamma is not None else None
        beta = self._constant(add.input[1]) if add is not None else None
        if beta is None or mul.input[0] != back.output[0] or add.input[0] != mul.output[0]:
            return None
        epsilon = float(_attributes(norm).get("epsilon", 1e-5))
        step = _Step("group_norm", [node.input[0]], add.output[0],
                     {"groups": int(shape[1]), "weight": gamma.reshape(-1), "bias": beta.reshape(-1),
                      "eps": epsilon})
        return step, (node, norm, back, mul, add)

    @staticmethod
    def _mish(node, only):
        if node.op_type != "Softplus":
            return None
        tanh = only(node.output[0], "Tanh")
        mul = only(tanh.output[0], "Mul") if tanh is not None else None
        if mul is None or sorted(mul.input) != sorted([node.input[0], tanh.output[0]]):
            return None
        return _Step("mish", [node.input[0]], mul.output[0]), (node, tanh, mul)

    def _single(self, node) -> _Step:
        op = node.op_type
        if op in ("Conv", "ConvTranspose"):
            if len(self.constants[node.input[1]].shape) != 5:
                raise ModelError(f"gland model: {op} node {node.name!r} is not a 3D convolution.")
            inputs = [name for name in node.input if name]
            return _Step("conv" if op == "Conv" else "conv_transpose", inputs, node.output[0], _conv_params(node, op))
        if op in ("Add", "Mul"):
            return _Step(op.lower(), list(node.input), node.output[0])
        if op in ("Tanh", "Softplus"):
            return _Step(op.lower(), [node.input[0]], node.output[0])
        raise ModelError(f"gland model {self.path.name}: operator {op} (node {node.name!r}) is not one the "
                         "PyTorch runner implements.")

    def _last_uses(self) -> dict[str, int]:
        last: dict[str, int] = {}
        for i, step in enumerate(self.steps):
            for name in step.inputs:
                last[name] = i
        return last

    # -- running ---------------------------------------------------------------------------

    def get_inputs(self) -> list[_Input]:
        return [_Input(self.input_name)]

    def run(self, _output_names, feeds: dict) -> list[np.ndarray]:
        """The graph's output for feeds[input name] (N, C, X, Y, Z float32), like onnxruntime."""
        import torch
        import torch.nn.functional as F

        channels_last = torch.channels_last_3d if self.device.type == "cpu" else torch.contiguous_format
        values = {self.input_name: torch.from_numpy(np.ascontiguousarray(feeds[self.input_name], np.float32))
                  .to(self.device).contiguous(memory_format=channels_last)}

        def get(name: str):
            return values[name] if name in values else self.constants[name]

        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bfloat16")
        with torch.inference_mode(), autocast:
            for i, step in enumerate(self.steps):
                args = [get(name) for name in step.inputs]
                p = step.params
                if step.op == "conv":
                    out = F.conv3d(args[0], args[1], args[2] if len(args) > 2 else None, p["stride"], p["padding"],
                                   p["dilation"], p["groups"])
                elif step.op == "conv_transpose":
                    out = F.conv_transpose3d(args[0], args[1], args[2] if len(args) > 2 else None, p["stride"],
                                             p["padding"], p["output_padding"], p["groups"], p["dilation"])
                elif step.op == "group_norm":
                    out = F.group_norm(args[0], p["groups"], p["weight"], p["bias"], p["eps"])
                elif step.op == "mish":
                    out = F.mish(args[0])
                elif step.op == "add":
                    out = args[0] + args[1]
                elif step.op == "mul":
                    out = args[0] * args[1]
                elif step.op == "tanh":
                    out = torch.tanh(args[0])
                else:  # softplus
                    out = F.softplus(args[0])
                values[step.output] = out
                for name in step.inputs:  # free what no later step reads
                    if self._last_use.get(name) == i and name in values and name != step.output:
                        del values[name]
            result = values[self.output_name]
        return [result.float().contiguous().cpu().numpy()]


def _load_graph(path: Path):
    """The graph of an ONNX file; weights must be inside the file (external data is refused,
    so a model file never makes this read other files)."""
    try:
        import onnx
    except ImportError:
        raise ModelError("The PyTorch gland runner needs the 'onnx' package.") from None
    from onnx.external_data_helper import uses_external_data

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and friends for corrupt files
        raise ModelError(f"Gland model file {path} cannot be loaded by onnx (corrupt or not an ONNX model): "
                         f"{str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__}") from None
    if any(uses_external_data(t) for t in model.graph.initializer):
        raise ModelError(f"Gland model file {path} keeps its weights in external files; "
                         "a self-contained ONNX file is needed.")
    return model.graph


def open_torch_network(path: Path, device: Optional[str] = None, precision: str = "auto") -> OnnxTorchNetwork:
    """The PyTorch runner on the first GPU when there is one, else the CPU."""
    from ..device import resolve_device

    return OnnxTorchNetwork(path, device or resolve_device("auto").torch_name, precision)
