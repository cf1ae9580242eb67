"""ONNX export with dynamic axes and the inference backends (torch precisions, ONNX Runtime, OpenVINO) on tiny
networks: every backend agrees with PyTorch fp32, at two input sizes and batch sizes from one export; what the
backend setting (``auto`` included) resolves to."""

from __future__ import annotations

import sys

import pytest
import torch

from inferers.flip_tta import FlipTTAInferer
from networks.ensemble import ProbabilityEnsemble
from networks.magnet import MagnetNet
from networks.runtime import BACKENDS, TorchRuntime, build_runtime, resolve_backend
from networks.unet_plus_plus import UNet, UNetPlusPlus, seg_det_probabilities
from utils.precision import Precision


def _argmax_agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.argmax(1) == b.argmax(1)).float().mean().item()


def _magnet() -> torch.nn.Module:
    torch.manual_seed(0)
    return MagnetNet(in_channels=1, num_classes=3, depths=(1, 1, 1, 1), dims=(8, 16, 32, 64), morph_dim=8,
                     cls_hidden=(16,)).eval()


def _retinal_fusion() -> torch.nn.Module:
    torch.manual_seed(0)
    features = (4, 8, 8, 16, 16)
    members = [UNetPlusPlus(features=features, deep_supervision=True).eval(), UNet(features=features).eval()]
    return ProbabilityEnsemble(members, activation=seg_det_probabilities, weights=[0.5, 0.5]).eval()


def _tta_ensemble() -> torch.nn.Module:
    torch.manual_seed(0)
    members = [UNet(in_channels=1, num_classes=2, features=(4, 8, 8, 16, 16), num_det_classes=0).eval()
               for _ in range(2)]
    return ProbabilityEnsemble(members, activation="softmax", inferer=FlipTTAInferer(batch_variants=True)).eval()


def test_channels_last_puts_3d_weights_in_channels_last_3d():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv3d(4, 2, 1)).eval()
    x = torch.randn(1, 1, 4, 8, 8)
    with torch.inference_mode():
        reference = net(x)
        output = TorchRuntime(net, Precision(channels_last=True))(x)
    assert all(p.is_contiguous(memory_format=torch.channels_last_3d) for p in net.parameters() if p.ndim == 5)
    torch.testing.assert_close(output, reference)


NETWORKS = {"magnet": (_magnet, 2), "retinal_fusion": (_retinal_fusion, 3), "tta_ensemble": (_tta_ensemble, 1)}


def test_fp32_is_exactly_the_network_and_bf16_channels_last_is_what_it_says():
    net, x = _magnet(), torch.randn(1, 2, 64, 64)
    with torch.inference_mode():
        reference = net(x)
        assert torch.equal(TorchRuntime(net, Precision())(x), reference)
        fast = TorchRuntime(net, Precision(torch.bfloat16, channels_last=True))
        assert any(p.is_contiguous(memory_format=torch.channels_last) and p.ndim == 4 and p.shape[-1] > 1
                   for p in net.parameters())
        seen = {}
        hook = net.register_forward_hook(lambda m, i, o: seen.update(dtype=o.dtype, layout=i[0].is_contiguous(
            memory_format=torch.channels_last)))
        output = fast(x)
        hook.remove()
    assert seen == {"dtype": torch.bfloat16, "layout": True}
    assert output.dtype == torch.float32 and not torch.equal(output, reference)
    assert _argmax_agreement(output, reference) > 0.9


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_onnx_export_has_dynamic_batch_and_spatial_axes(name, tmp_path):
    import onnx

    from networks.onnx import export_onnx

    factory, channels = NETWORKS[name]
    path = export_onnx(factory(), torch.randn(1, channels, 32, 32), tmp_path / "net.onnx")
    model = onnx.load(str(path))
    assert model.graph.input[0].type.tensor_type.shape.dim[1].dim_value == channels  # channels stay fixed
    for value in (model.graph.input[0], model.graph.output[0]):
        dims = value.type.tensor_type.shape.dim
        assert all(d.dim_param for i, d in enumerate(dims) if i != 1), f"{value.name}: {dims}"


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_runtime_backends_agree_with_torch_fp32_at_two_sizes(backend, name):
    factory, channels = NETWORKS[name]
    net = factory()
    runtime = build_runtime(net, backend, Precision())
    torch.manual_seed(1)
    with torch.inference_mode():
        for shape in [(1, channels, 32, 48), (2, channels, 64, 32)]:  # the first call exports, the second reuses
            x = torch.randn(shape)
            reference, output = net(x), runtime(x)
            assert output.shape == reference.shape and output.dtype == torch.float32
            assert _argmax_agreement(output, reference) >= 0.995
            torch.testing.assert_close(output, reference, atol=1e-4, rtol=1e-3)


def test_openvino_bf16_runs_in_bf16_and_still_agrees():
    net, x = _magnet(), torch.randn(1, 2, 64, 64)
    runtime = build_runtime(net, "openvino", Precision(torch.bfloat16))
    assert runtime.inference_precision == "bf16"
    assert runtime.description.startswith("openvino in bf16")
    assert build_runtime(net, "openvino", Precision()).inference_precision == "f32"
    with torch.inference_mode():
        assert _argmax_agreement(runtime(x), net(x)) > 0.9


def test_bad_backend_settings_are_refused_clearly(monkeypatch):
    net = _magnet()
    with pytest.raises(ValueError, match="backend 'tensorrt'"):
        build_runtime(net, "tensorrt")
    with pytest.raises(ValueError, match="runs on the CPU"):
        build_runtime(net, "onnxruntime", device="cuda")
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino now raises ImportError
    with pytest.raises(ImportError, match="pip install openvino"):
        build_runtime(net, "openvino")


def test_auto_backend_is_the_bundles_cpu_choice_on_the_cpu_and_torch_elsewhere():
    for backend in BACKENDS:
        assert resolve_backend("auto", "cpu", backend) == backend
        assert resolve_backend("auto", "cuda", backend) == "torch"
        assert resolve_backend("auto", torch.device("cuda", 1), backend) == "torch"
        assert resolve_backend(backend, "cpu", "openvino") == backend  # a named backend is taken as written
    assert resolve_backend("auto", "cpu") == "torch"


def test_auto_backend_falls_back_to_torch_with_one_warning_when_its_package_is_missing(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino now raises ImportError
    with caplog.at_level("WARNING", logger="networks.runtime"):
        assert resolve_backend("auto", "cpu", "openvino") == "torch"
    assert len(caplog.records) == 1 and "the package 'openvino' is not installed" in caplog.records[0].getMessage()
    caplog.clear()
    assert resolve_backend("auto", "cuda", "openvino") == "torch" and not caplog.records  # never needed there
    assert resolve_backend("openvino", "cpu") == "openvino"  # asked for by name: build_runtime raises ImportError
    monkeypatch.setitem(sys.modules, "onnx", None)  # the export the runtimes need
    with caplog.at_level("WARNING", logger="networks.runtime"):
        assert resolve_backend("auto", "cpu", "onnxruntime") == "torch"
    assert "the package 'onnx' is not installed" in caplog.records[-1].getMessage()


@pytest.mark.parametrize(("setting", "auto_cpu", "named"), [("tensorrt", "torch", "backend 'tensorrt'"),
                                                            ("auto", "auto", "auto_cpu_backend 'auto'"),
                                                            ("Torch", "openvino", "backend 'Torch'")])
def test_bad_backend_values_stop_with_the_valid_values(setting, auto_cpu, named):
    with pytest.raises(ValueError, match=named) as error:
        resolve_backend(setting, "cpu", auto_cpu)
    assert all(repr(backend) in str(error.value) for backend in BACKENDS)
