"""The PyTorch runner of the gland network's ONNX graph (zones/onnx_torch.py) against onnxruntime.

Small graphs are built with the `onnx` helpers in the exact form PyTorch exports a GroupNorm
(Reshape to (N, G, -1), InstanceNormalization, Reshape to the input's shape, Mul, Add) and a
Mish (Softplus, Tanh, Mul), with the convolutions of an encoder/decoder (strided Conv,
ConvTranspose, a residual Add): both runtimes must give the same numbers. The real TAPS
model is compared on one window; the whole gland on ProstateX-0000 in test_zones_taps.py.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="the PyTorch gland runner reads the graph with the onnx package")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from ProstateLesionCADLib.errors import ModelError, ParameterError  # noqa: E402
from ProstateLesionCADLib.zones import taps_gland  # noqa: E402
from ProstateLesionCADLib.zones.onnx_torch import OnnxTorchNetwork, cpu_has_native_bfloat16  # noqa: E402

RNG = np.random.default_rng(7)


def _const(name, array):
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(array), name + "_v"))


def _group_norm_nodes(x, out, prefix, channels, groups, initializers):
    gamma = RNG.normal(1.0, 0.2, (channels, 1, 1, 1)).astype(np.float32)
    beta = RNG.normal(0.0, 0.2, (channels, 1, 1, 1)).astype(np.float32)
    initializers += [numpy_helper.from_array(gamma, prefix + "gamma"), numpy_helper.from_array(beta, prefix + "beta")]
    return [
        _const(prefix + "shape", np.array([0, groups, -1], np.int64)),
        helper.make_node("Reshape", [x, prefix + "shape"], [prefix + "r"]),
        _const(prefix + "one", np.ones(groups, np.float32)),
        _const(prefix + "zero", np.zeros(groups, np.float32)),
        helper.make_node("InstanceNormalization", [prefix + "r", prefix + "one", prefix + "zero"], [prefix + "n"],
                         epsilon=1e-5),
        helper.make_node("Shape", [x], [prefix + "s"]),
        helper.make_node("Reshape", [prefix + "n", prefix + "s"], [prefix + "b"]),
        helper.make_node("Mul", [prefix + "b", prefix + "gamma"], [prefix + "m"]),
        helper.make_node("Add", [prefix + "m", prefix + "beta"], [out]),
    ]


def _mish_nodes(x, out, prefix):
    return [helper.make_node("Softplus", [x], [prefix + "sp"]),
            helper.make_node("Tanh", [prefix + "sp"], [prefix + "t"]),
            helper.make_node("Mul", [x, prefix + "t"], [out])]


def _weight(name, shape, initializers):
    initializers.append(numpy_helper.from_array(RNG.normal(0, 0.3, shape).astype(np.float32), name))
    return name


def _encoder_decoder(path, extra_nodes=(), conv_pads=(1, 1, 1, 1, 1, 1)):
    """conv(1→8) → GroupNorm(4) → Mish → conv stride 2 (8→16) → Mish → ConvTranspose ×2 (16→8)
    → + skip → raw Softplus/Tanh (unfused) → head conv (8→1, bias)."""
    init, nodes = [], []
    nodes.append(helper.make_node("Conv", ["input", _weight("w0", (8, 1, 3, 3, 3), init)], ["c0"],
                                  kernel_shape=[3, 3, 3], pads=list(conv_pads)))
    nodes += _group_norm_nodes("c0", "g0", "gn0_", 8, 4, init)
    nodes += _mish_nodes("g0", "a0", "mish0_")
    nodes.append(helper.make_node("Conv", ["a0", _weight("w1", (16, 8, 3, 3, 3), init)], ["c1"],
                                  kernel_shape=[3, 3, 3], pads=[1] * 6, strides=[2, 2, 2]))
    nodes += _mish_nodes("c1", "a1", "mish1_")
    nodes.append(helper.make_node("ConvTranspose", ["a1", _weight("wt", (16, 8, 2, 2, 2), init)], ["u"],
                                  kernel_shape=[2, 2, 2], strides=[2, 2, 2]))
    nodes.append(helper.make_node("Add", ["u", "c0"], ["skip"]))
    nodes.append(helper.make_node("Softplus", ["skip"], ["sp"]))
    nodes.append(helper.make_node("Tanh", ["sp"], ["th"]))
    nodes += list(extra_nodes)
    last = extra_nodes[-1].output[0] if extra_nodes else "th"
    nodes.append(helper.make_node("Conv", [last, _weight("wh", (1, 8, 1, 1, 1), init), _weight("bh", (1,), init)],
                                  ["output"], kernel_shape=[1, 1, 1]))
    graph = helper.make_graph(nodes, "encoder-decoder",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 1, 16, 16, 8])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [None, 1, 16, 16, 8])], init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_encoder_decoder_graph_matches_onnxruntime(tmp_path):
    path = _encoder_decoder(tmp_path / "net.onnx")
    net = OnnxTorchNetwork(path, precision="float32")
    ops = [s.op for s in net.steps]
    # the exported patterns ran as one operator each; the lone Softplus/Tanh stayed as they are
    assert ops.count("group_norm") == 1 and ops.count("mish") == 2
    assert "softplus" in ops and "tanh" in ops and "conv_transpose" in ops
    x = RNG.normal(0, 1, (2, 1, 16, 16, 8)).astype(np.float32)
    ours = net.run(None, {"input": x})[0]
    theirs = taps_gland.open_onnxruntime_session(path).run(None, {"input": x})[0]
    assert ours.shape == theirs.shape == (2, 1, 16, 16, 8)
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)


def test_bfloat16_convolutions_where_the_cpu_has_them(tmp_path):
    """precision "auto" picks bfloat16 on a CPU with native bfloat16 only; its result stays close."""
    path = _encoder_decoder(tmp_path / "net.onnx")
    auto = OnnxTorchNetwork(path)
    assert auto.precision == ("bfloat16" if cpu_has_native_bfloat16() else "float32")
    assert taps_gland.engine_name(auto) == f"pytorch (cpu, {auto.precision})"
    x = RNG.normal(0, 1, (1, 1, 16, 16, 8)).astype(np.float32)
    exact = OnnxTorchNetwork(path, precision="float32").run(None, {"input": x})[0]
    bf16 = OnnxTorchNetwork(path, precision="bfloat16").run(None, {"input": x})[0]
    assert bf16.dtype == np.float32 and not np.array_equal(bf16, exact)  # the convolutions did run in bfloat16
    assert np.abs(bf16 - exact).max() <= 0.05 * np.abs(exact).max()
    with pytest.raises(ParameterError, match="precision"):
        OnnxTorchNetwork(path, precision="float16")


def test_unsupported_graphs_are_refused_and_auto_falls_back_to_onnxruntime(tmp_path):
    sigmoid = helper.make_node("Sigmoid", ["th"], ["sg"])
    path = _encoder_decoder(tmp_path / "sigmoid.onnx", extra_nodes=[sigmoid])
    with pytest.raises(ModelError, match="operator Sigmoid"):
        OnnxTorchNetwork(path)
    with pytest.raises(ModelError, match="operator Sigmoid"):
        taps_gland.open_session(path, engine="pytorch")
    session = taps_gland.open_session(path)  # auto: onnxruntime runs what PyTorch's runner does not
    assert taps_gland.engine_name(session).startswith("onnxruntime")
    with pytest.raises(ModelError, match="asymmetric padding"):
        OnnxTorchNetwork(_encoder_decoder(tmp_path / "asym.onnx", conv_pads=(1, 1, 1, 0, 1, 1)))
    with pytest.raises(ParameterError, match="gland engine"):
        taps_gland.open_session(path, engine="tensorrt")


def test_weights_in_external_files_are_refused(tmp_path):
    """A model file never makes the runner read other files (its weights must be inside it)."""
    path = _encoder_decoder(tmp_path / "inside.onnx")
    model = onnx.load(str(path))
    onnx.save_model(model, str(tmp_path / "outside.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0)
    with pytest.raises(ModelError, match="external files"):
        OnnxTorchNetwork(tmp_path / "outside.onnx")
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ModelError, match="cannot be loaded"):
        OnnxTorchNetwork(corrupt)


@pytest.mark.skipif(importlib.util.find_spec("taps") is None, reason="the TAPS model ships in lavlab-taps")
def test_taps_network_window_matches_onnxruntime():
    """One 128 × 128 × 32 window of the real TAPS network: 24 GroupNorms and 24 Mish fused."""
    path = taps_gland.taps_model_path()
    net = taps_gland.open_session(path, engine="pytorch", precision="float32")
    assert [s.op for s in net.steps].count("group_norm") == 24 and [s.op for s in net.steps].count("mish") == 24
    x = RNG.normal(0, 1, (1, 1, 128, 128, 32)).astype(np.float32)
    ours = net.run(None, {"input": x})[0]
    theirs = taps_gland.open_session(path, engine="onnxruntime").run(None, {"input": x})[0]
    assert np.abs(ours - theirs).max() <= 1e-4 * np.abs(theirs).max() + 1e-3
