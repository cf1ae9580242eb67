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


def missing_workflow_properties(config_file: list[str], workflow_type: str, **override) -> list[str]:
    """The MONAI bundle workflow properties (``monai.bundle.properties``) of ``workflow_type`` that the configs
    lack, as ``ConfigWorkflow.check_properties`` finds them (it instantiates each required property)."""
    workflow = ConfigWorkflow(config_file=config_file, workflow_type=workflow_type, **override)
    workflow.initialize()
    try:
        return workflow.check_properties() or []
    finally:  # the trainer was built, so its RunLog opened log.txt and took the excepthook: a run would end it
        if "run_log" in workflow.parser:
            workflow.parser.get_parsed_content("run_log").completed(None)
