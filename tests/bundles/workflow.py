"""Running a bundle config in-process, as ``python -m monai.bundle run`` does, for the bundle tests."""

from __future__ import annotations

from monai.bundle import ConfigWorkflow


def run_bundle(config_file: list[str], **override) -> ConfigWorkflow:
    """Initialise, run and finalise the workflow of ``config_file`` with ``override``s; return it."""
    workflow = ConfigWorkflow(config_file=config_file, workflow_type=None, **override)
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    return workflow
