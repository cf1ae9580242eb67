from __future__ import annotations

import json

import pytest
import torch
from monai.transforms import Compose

from data.listing import CaseList
from engines.inference import CaseInferenceWorkflow, InferenceFailed, OutputNotWritable, find_writers
from networks.runtime import build_runtime
from transforms.writers import CaseWriterd
from utils.atomic import write_text_atomic
from utils.precision import resolve_precision


def _load(item: dict) -> dict:
    if item["case"] == "broken":
        raise ValueError("broken.h5: key 'trans_img' missing")
    return {**item, "image": torch.full((1, 4, 4), float(item["value"]))}


def _workflow(datalist, written, **kwargs):
    def write(data: dict) -> dict:
        if data["case"] == "unwritable":
            raise OSError("disk full")
        written[data["case"]] = data["pred"]
        return data

    return CaseInferenceWorkflow(
        datalist=datalist,
        preprocessing=_load,
        network=torch.nn.Identity(),
        postprocessing=write,
        progress=False,
        **kwargs,
    )


def test_all_cases_predicted_and_timed(tmp_path):
    written = {}
    report = _workflow([{"case": "a", "value": 1}, {"case": "b", "value": 2}], written).run()
    assert report.succeeded == ["a", "b"] and not report.failed
    assert written["b"].shape == (1, 4, 4) and float(written["b"].max()) == 2.0
    assert set(report.case_ms) == {"a", "b"} and all(ms >= 0 for ms in report.case_ms.values())


def test_bad_cases_are_reported_by_name_and_the_rest_written(tmp_path):
    written = {}
    datalist = [{"case": "a", "value": 1}, {"case": "broken", "value": 0}, {"case": "unwritable", "value": 3},
                {"case": "c", "value": 4}]
    report_path = tmp_path / "report.json"
    with pytest.raises(InferenceFailed) as raised:
        _workflow(datalist, written, report_path=report_path).run()
    assert sorted(written) == ["a", "c"]
    message = str(raised.value)
    assert "broken" in message and "trans_img" in message and "unwritable" in message and "disk full" in message
    saved = json.loads(report_path.read_text())
    assert saved["succeeded"] == ["a", "c"]
    assert [f["case"] for f in saved["failed"]] == ["broken", "unwritable"]
    assert saved["failed"][0]["stage"] == "reading/preprocessing"


def test_failures_can_be_returned_instead_of_raised():
    report = _workflow([{"case": "broken", "value": 0}], {}, raise_on_failure=False).run()
    assert [f.case for f in report.failed] == ["broken"] and report.succeeded == []


def test_the_reported_error_is_the_transform_error_not_monai_wrapper():
    from monai.transforms import Compose, Lambdad

    def fail(_):
        raise ValueError("0003.h5: dataset 'trans_img' not found")

    workflow = CaseInferenceWorkflow(
        datalist=[{"case": "0003", "image": 0}],
        preprocessing=Compose([Lambdad("image", fail)]),
        network=torch.nn.Identity(),
        postprocessing=lambda d: d,
        raise_on_failure=False,
        progress=False,
    )
    failure = workflow.run().failed[0]
    assert failure.error == "ValueError: 0003.h5: dataset 'trans_img' not found"


def test_peak_memory_of_each_case_is_reported(tmp_path):
    def allocate(item: dict) -> dict:
        return {**item, "image": torch.ones(1, 512, 512 * item["value"])}  # 1 MB per unit of "value"

    workflow = CaseInferenceWorkflow(
        datalist=[{"case": "small", "value": 1}, {"case": "large", "value": 64}],
        preprocessing=allocate,
        network=torch.nn.Identity(),
        postprocessing=lambda d: d,
        report_path=tmp_path / "report.json",
        progress=False,
    )
    report = workflow.run()
    assert set(report.peak_memory_mb) == {"small", "large"} and report.memory_kind
    # per-case figures are recorded and ordered; that a block's allocation raises the CPU peak is checked in a
    # fresh process by tests/utils/test_memory.py (a long-lived test worker can serve it from freed memory)
    assert report.peak_memory_mb["large"] >= report.peak_memory_mb["small"] > 0
    assert "peak memory" in report.summary()
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["max_peak_memory_mb"] == pytest.approx(report.peak_memory_mb["large"])


class _TextWriter(CaseWriterd):
    """Writes ``{case}{suffix}.txt`` holding the prediction's maximum; fails for the case named ``fail_case``."""

    extension = ".txt"

    def __init__(self, output_dir, suffix, fail_case=None, overwrite=False):
        super().__init__("pred", output_dir, suffix=suffix, overwrite=overwrite)
        self.fail_case = fail_case

    def write(self, case, data):
        if case == self.fail_case:
            raise OSError(f"cannot write {self.output_path(case)}")
        write_text_atomic(self.output_path(case), str(float(data["pred"].max())), overwrite=self.overwrite)


def _writing_workflow(datalist, writers, **kwargs):
    return CaseInferenceWorkflow(
        datalist=datalist,
        preprocessing=_load,
        network=torch.nn.Identity(),
        postprocessing=Compose(writers),
        raise_on_failure=False,
        progress=False,
        **kwargs,
    )


def test_a_case_is_written_whole_or_not_at_all(tmp_path):
    writers = [_TextWriter(tmp_path, "_seg"), _TextWriter(tmp_path, "_det", fail_case="b")]
    report = _writing_workflow([{"case": "a", "value": 1}, {"case": "b", "value": 2}], writers).run()
    assert report.succeeded == ["a"] and [f.case for f in report.failed] == ["b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_det.txt", "a_seg.txt"], "b's _seg must not be left"


def test_existing_outputs_fail_the_case_before_the_network_runs(tmp_path):
    (tmp_path / "a_det.txt").write_text("old")
    seen = []

    def network(x):
        seen.append(x)
        return x

    writers = [_TextWriter(tmp_path, "_seg"), _TextWriter(tmp_path, "_det")]
    workflow = _writing_workflow([{"case": "a", "value": 1}], writers)
    workflow.network = torch.nn.Module()
    workflow.network.forward = network
    report = workflow.run()
    assert not seen, "the network must not run for a case whose outputs exist"
    assert report.failed[0].stage == "checking outputs" and "a_det.txt" in report.failed[0].error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_det.txt"], "no new _seg beside the old _det"


def test_skip_existing_does_only_the_missing_cases(tmp_path):
    datalist = [{"case": "a", "value": 1}, {"case": "b", "value": 2}]
    writers = [_TextWriter(tmp_path, "_seg"), _TextWriter(tmp_path, "_det")]
    (tmp_path / "a_seg.txt").write_text("1.0")
    (tmp_path / "a_det.txt").write_text("1.0")
    report = _writing_workflow(datalist, writers, skip_existing=True, report_path=tmp_path / "r.json").run()
    assert report.skipped == ["a"] and report.succeeded == ["b"] and not report.failed
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["skipped"] == ["a"] and saved["num_cases"] == 2
    assert "1 skipped (outputs already there)" in report.summary()


def test_an_unwritable_output_folder_stops_the_run_before_any_case(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    read = []

    def load(item):
        read.append(item["case"])
        return _load(item)

    workflow = _writing_workflow([{"case": "a", "value": 1}], [_TextWriter(blocker / "out", "_seg")])
    workflow.preprocessing = load
    with pytest.raises(OutputNotWritable, match=str(blocker / "out")):
        workflow.run()
    assert not read


def test_entries_that_are_no_case_are_reported_and_the_counts_add_up(tmp_path):
    datalist = CaseList([{"case": "a", "value": 1}], skipped=[{"entry": "in/notes.txt", "reason": "not an .h5 file"}])
    report = _workflow(datalist, {}, report_path=tmp_path / "r.json").run()
    assert report.num_entries == 2 and report.num_cases == 1
    assert "SKIPPED in/notes.txt: not an .h5 file" in report.summary()
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["num_entries"] == 2 and saved["skipped_entries"][0]["reason"] == "not an .h5 file"


def test_writers_are_found_inside_nested_compose(tmp_path):
    inner, outer = _TextWriter(tmp_path, "_a"), _TextWriter(tmp_path, "_b")
    assert find_writers(Compose([Compose([inner]), outer])) == [inner, outer]


def _conv_workflow(written, **kwargs):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 3, 1)).eval()

    def load(item: dict) -> dict:
        torch.manual_seed(item["value"])
        return {**item, "image": torch.randn(1, 16, 24)}

    def write(data: dict) -> dict:
        written[data["case"]] = (data["image"], data["pred"])
        return data

    workflow = CaseInferenceWorkflow([{"case": "a", "value": 1}], load, net, write, progress=False, **kwargs)
    return workflow, net


def test_precision_fp32_is_exactly_fp32_and_bf16_autocasts_the_network():
    written, seen = {}, {}
    workflow, net = _conv_workflow(written, precision="fp32")
    workflow.run()
    image, pred = written["a"]
    with torch.inference_mode():
        assert torch.equal(pred, net(image[None])[0])
    workflow, net = _conv_workflow(written, precision="bf16+channels_last")
    net.register_forward_hook(lambda m, i, o: seen.update(dtype=o.dtype))
    workflow.run()
    assert seen["dtype"] == torch.bfloat16 and written["a"][1].dtype == torch.float32
    assert workflow.precision.name == "bf16+channels_last"


def test_amp_without_precision_keeps_its_meaning():
    assert _conv_workflow({}, amp=True)[0].precision.name == "bf16"
    assert _conv_workflow({}, amp=False)[0].precision.name == "fp32"


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_runtime_backends_give_the_torch_fp32_prediction(backend):
    written = {}
    workflow, net = _conv_workflow(written, backend=backend, precision="fp32")
    workflow.run()
    image, pred = written["a"]
    with torch.inference_mode():
        torch.testing.assert_close(pred, net(image[None])[0], atol=1e-4, rtol=1e-3)


def test_backend_auto_runs_the_bundles_cpu_backend_on_the_cpu(caplog):
    written = {}
    workflow, net = _conv_workflow(written, backend="auto", auto_cpu_backend="openvino", precision="fp32")
    assert workflow.backend == "openvino"
    with caplog.at_level("INFO", logger="engines.inference"):
        workflow.run()
    assert any("network run by openvino in f32" in record.getMessage() for record in caplog.records)
    image, pred = written["a"]
    with torch.inference_mode():
        torch.testing.assert_close(pred, net(image[None])[0], atol=1e-4, rtol=1e-3)
    assert _conv_workflow({}, backend="auto")[0].backend == "torch"  # no auto_cpu_backend: torch


def test_the_log_says_how_models_wrapped_inside_the_network_run(caplog):
    """A network whose models are wrapped one by one (the sliding window kept in Python) is run as it is; the log
    names the inner runtimes' precision, not the outer fp32 pass-through."""
    written = {}
    workflow, net = _conv_workflow(written, precision="fp32")
    workflow.network = torch.nn.Sequential(build_runtime(net, "torch", resolve_precision("bf16+channels_last", "cpu")))
    with caplog.at_level("INFO", logger="engines.inference"):
        workflow.run()
    messages = [record.getMessage() for record in caplog.records]
    assert "network run by torch in bf16+channels_last on cpu" in messages


def test_a_wrong_backend_stops_the_workflow_naming_the_valid_values():
    with pytest.raises(ValueError, match=r"backend 'openvnio' is not one of \['auto', 'torch', 'onnxruntime'"):
        _conv_workflow({}, backend="openvnio")
