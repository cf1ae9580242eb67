from __future__ import annotations

import pytest
import torch

from utils import precision as precision_module
from utils.precision import Precision, resolve_precision


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("fp32", Precision()),
        ("bf16", Precision(torch.bfloat16)),
        ("fp16+channels_last", Precision(torch.float16, True)),
        ("fp32+channels_last", Precision(None, True)),
    ],
)
def test_explicit_settings_mean_what_they_say_on_any_device(setting, expected):
    assert resolve_precision(setting, "cpu") == expected
    assert resolve_precision(setting, "cuda") == expected
    assert expected.name == setting


def test_auto_is_fp16_on_cuda_the_bundle_choice_on_a_bf16_cpu_and_fp32_elsewhere(monkeypatch):
    assert resolve_precision("auto", "cuda", auto_cpu="bf16") == Precision(torch.float16)
    monkeypatch.setattr(precision_module, "cpu_has_native_bf16", lambda: True)
    assert resolve_precision("auto", "cpu", auto_cpu="bf16") == Precision(torch.bfloat16)
    assert resolve_precision("auto", "cpu") == Precision(torch.bfloat16, True)
    monkeypatch.setattr(precision_module, "cpu_has_native_bf16", lambda: False)
    assert resolve_precision("auto", "cpu") == Precision()


@pytest.mark.parametrize("setting", ["float32", "bf16+nhwc", "auto+channels_last", ""])
def test_a_bad_setting_is_refused_by_name(setting):
    with pytest.raises(ValueError, match="precision"):
        resolve_precision(setting, "cpu")
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("auto", "cpu", auto_cpu=setting)


def test_cpu_bf16_detection_reads_the_cpu_flags(monkeypatch, tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    monkeypatch.setattr(precision_module, "Path", lambda _: cpuinfo)
    for flags, expected in [("fpu avx512f avx512_bf16", True), ("fpu amx_bf16 amx_tile", True), ("fpu avx512f", False)]:
        cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
        precision_module.cpu_has_native_bf16.cache_clear()
        assert precision_module.cpu_has_native_bf16() is expected
    precision_module.cpu_has_native_bf16.cache_clear()
