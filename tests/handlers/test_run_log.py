from __future__ import annotations

import logging
import sys

import pytest
import torch
from ignite.engine import Engine, Events
from monai.apps import get_logger

from formats.errors import CaseReadError
from handlers.run_log import RunLog
from utils.errors import BriefErrors


def _engine(fail_at: int | None = None) -> Engine:
    def step(engine: Engine, batch: int) -> float:
        if engine.state.iteration == fail_at:
            _read_case("case_7.png")
        return 0.5

    engine = Engine(step)
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: e.logger.info("epoch %d done", e.state.epoch))
    return engine


def _read_case(name: str) -> None:
    raise CaseReadError(f"{name}: image is 0x0")


def _attached(folder) -> bool:
    return any(getattr(h, "baseFilename", "").startswith(str(folder)) for h in logging.getLogger().handlers)


@pytest.fixture
def info_logging(caplog, monkeypatch):
    caplog.set_level(logging.INFO)  # the root level the bundles' logging.conf sets
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)  # restored after the test


def test_the_console_records_of_a_run_go_to_the_file_and_a_resume_appends(tmp_path, info_logging):
    own_console = get_logger("test_run_log.stats")  # as MONAI's StatsHandler: own console handler, no propagation
    for _ in range(2):
        engine = _engine()
        RunLog(tmp_path).attach(engine)
        engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: own_console.info("metrics of %d", e.state.epoch))
        engine.add_event_handler(Events.COMPLETED, lambda e: logging.getLogger("summary").info("summary written"))
        engine.run([0, 1], max_epochs=2)
    text = (tmp_path / "log.txt").read_text()
    assert text.count("run started:") == 2 and text.startswith("===== ")
    assert text.count("epoch 2 done") == 2 and " - INFO - epoch 1 done" in text
    assert text.count("metrics of 2") == 2 and text.count("summary written") == 2
    assert not _attached(tmp_path) and not isinstance(sys.excepthook, BriefErrors)


def test_an_engine_error_leaves_its_full_traceback_in_the_file(tmp_path, info_logging):
    engine = _engine(fail_at=3)
    RunLog(tmp_path).attach(engine)
    with pytest.raises(CaseReadError):
        engine.run([0, 1], max_epochs=2)
    text = (tmp_path / "log.txt").read_text()
    assert "Traceback (most recent call last)" in text and "in _read_case" in text
    assert "CaseReadError: case_7.png: image is 0x0" in text
    assert not _attached(tmp_path), "detached"


def test_a_failed_command_ends_with_one_line_naming_the_root_cause(tmp_path, info_logging, capsys):
    engine = _engine(fail_at=1)
    run_log = RunLog(tmp_path)
    run_log.attach(engine)
    try:
        try:
            engine.run([0], max_epochs=1)
        except CaseReadError as e:  # as monai.bundle's ConfigExpression wraps it
            raise RuntimeError("Failed to evaluate ConfigExpression: \n$@train#trainer.run()") from e
    except RuntimeError as wrapped:
        sys.excepthook(type(wrapped), wrapped, wrapped.__traceback__)
    err = capsys.readouterr().err
    assert err == f"\nERROR: CaseReadError: case_7.png: image is 0x0\n(full traceback in {tmp_path / 'log.txt'})\n"
    text = (tmp_path / "log.txt").read_text()
    assert "command failed: CaseReadError: case_7.png" in text and "Failed to evaluate" in text
    assert text.count("in _read_case") == 1, "the cause's traceback is written once"


def test_ranks_after_the_first_write_their_own_file(tmp_path, info_logging, monkeypatch):
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_rank", lambda: 1)
    engine = _engine()
    RunLog(tmp_path, brief_errors=False).attach(engine)
    engine.run([0], max_epochs=1)
    assert "epoch 1 done" in (tmp_path / "log_rank1.txt").read_text() and not (tmp_path / "log.txt").exists()


def test_started_before_the_engine_exists_it_logs_from_then_on(tmp_path, info_logging):
    run_log = RunLog(tmp_path)
    run_log.start()
    logging.getLogger("bundle").info("building the workflow")
    engine = _engine()
    run_log.attach(engine)
    engine.run([0], max_epochs=1)
    text = (tmp_path / "log.txt").read_text()
    assert text.count("run started") == 1 and text.index("building the workflow") < text.index("epoch 1 done")
    assert not _attached(tmp_path)
