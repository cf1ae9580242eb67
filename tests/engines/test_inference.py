from __future__ import annotations

import json

import pytest
import torch

from engines.inference import CaseInferenceWorkflow, InferenceFailed


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
