from __future__ import annotations

import sys

import pytest

from formats.errors import CaseReadError
from utils.errors import BriefErrors, error_summary, install_brief_errors, mark_logged, root_cause


def _wrapped() -> RuntimeError:
    """A bad case as MONAI reports it: Compose's wrapper inside the config runner's wrapper."""
    try:
        try:
            try:
                raise CaseReadError("case_7.png: image is 0x0")
            except CaseReadError as e:
                raise RuntimeError("applying transform <LoadImaged>") from e
        except RuntimeError as e:
            raise RuntimeError("Failed to evaluate ConfigExpression: \n$@runner.run()") from e
    except RuntimeError as e:
        return e


def test_the_root_cause_is_behind_monai_s_wrappers():
    assert str(root_cause(_wrapped())) == "case_7.png: image is 0x0"
    assert error_summary(_wrapped()) == "CaseReadError: case_7.png: image is 0x0"
    plain = RuntimeError("Failed to instantiate x")  # no cause: it is the cause
    assert error_summary(plain) == "RuntimeError: Failed to instantiate x"


def test_error_summary_reduces_a_dataloader_worker_error_to_its_last_line():
    message = "Caught ValueError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n" \
              '  File "x.py", line 1, in f\nValueError: case_3.png: label has values {7}\n'  # fmt: skip
    assert error_summary(ValueError(message)) == "ValueError: case_3.png: label has values {7}"


@pytest.fixture
def own_excepthook(monkeypatch):
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)  # restored after the test


def test_a_failed_command_prints_one_message_and_logs_the_traceback(tmp_path, capsys, own_excepthook):
    log = tmp_path / "out" / "log.txt"
    replaced = sys.excepthook
    assert install_brief_errors(log) is replaced and isinstance(sys.excepthook, BriefErrors)
    error = _wrapped()
    sys.excepthook(type(error), error, error.__traceback__)
    assert capsys.readouterr().err == f"\nERROR: CaseReadError: case_7.png: image is 0x0\n(full traceback in {log})\n"
    text = log.read_text()
    assert "command failed: CaseReadError" in text and text.count("Traceback (most recent call last)") == 3

    install_brief_errors(tmp_path / "second.txt")
    assert sys.excepthook.fallback is replaced, "replaced, not chained"
    mark_logged(error.__cause__.__cause__)
    sys.excepthook(type(error), error, error.__traceback__)
    assert (tmp_path / "second.txt").read_text().count("Traceback (most recent call last)") == 1


def test_an_unwritable_log_leaves_the_traceback_on_stderr(tmp_path, capsys, own_excepthook):
    (tmp_path / "file").write_text("")
    install_brief_errors(tmp_path / "file" / "log.txt")  # a folder that cannot exist
    error = _wrapped()
    sys.excepthook(type(error), error, error.__traceback__)
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and f"cannot write {tmp_path / 'file' / 'log.txt'}" in err
    assert "ERROR: CaseReadError: case_7.png: image is 0x0" in err


def test_a_logged_mark_stays_with_its_error_not_with_a_reused_id(tmp_path, own_excepthook):
    for _ in range(50):  # freed errors' ids are reused by new ones: none of these may count as logged
        mark_logged(_wrapped().__cause__.__cause__)
    install_brief_errors(tmp_path / "log.txt")
    error = _wrapped()
    sys.excepthook(type(error), error, error.__traceback__)
    assert (tmp_path / "log.txt").read_text().count("Traceback (most recent call last)") == 3
