"""Check the settings of a ``python -m monai.bundle run`` command line before the bundle does any work.

``monai.bundle run`` hands its command line to Fire, and Fire to ``ConfigParser.update``, which has two silent
failure modes that cost users runs:

- an override naming no key of the configs (``--max_epoch 1``, ``--input_dirr x``) is added to the config as a new,
  unused key: the run goes on with the defaults, without a word;
- Fire reads the words ``true`` and ``false`` as the strings ``"true"``/``"false"``, and the string ``"false"`` is
  true: ``--overwrite false`` overwrites, ``--resume false`` resumes.

:func:`check_settings` is the first step of every bundle config's ``initialize`` list (one line,
``SETTINGS_CHECK``). It reads the command line, loads the config files it names and stops the run with one clear
error on an unknown key (naming the nearest known keys) or on a boolean setting given a value that is not a boolean.
It also installs ``utils.errors.BriefErrors`` so that a failing command ends with one message, its full traceback
going to the run's log file.
"""

from __future__ import annotations

import difflib
import inspect
import logging
import os
import shlex
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from utils.errors import install_brief_errors

__all__ = ["SETTINGS_CHECK", "SettingsError", "bundle_run_argv", "check_settings", "known_ids"]

logger = logging.getLogger(__name__)

#: the ``initialize`` entry that runs the check, the full tracebacks going to ``<output_dir>/log.txt``; it comes
#: first in the list, and every config file that defines ``initialize`` has it (a later file's list replaces
#: the earlier one's)
SETTINGS_CHECK = {"_target_": "utils.settings.check_settings", "log_file": "$@output_dir + '/log.txt'"}

#: what a boolean setting accepts on the command line (Fire reads ``True``/``False``/``1``/``0`` as Python values)
TRUE_WORDS = ("true", "True", "1")
FALSE_WORDS = ("false", "False", "0")

_ID_SEP = "#"


class SettingsError(ValueError):
    """A command-line setting the bundle does not have, or a value it cannot mean."""


def bundle_run_argv() -> list[str] | None:
    """The arguments after ``run`` when this process is ``python -m monai.bundle run ...`` (or ``run_workflow``),
    else ``None`` (an
    in-process workflow, e.g. a test, passes its overrides as arguments and has no command line to check)."""
    main = Path(sys.argv[0]) if sys.argv else Path()
    if main.name != "__main__.py" or main.parent.name != "bundle" or main.parent.parent.name != "monai":
        return None
    return list(sys.argv[2:]) if len(sys.argv) > 1 and sys.argv[1] in ("run", "run_workflow") else None


def check_settings(
    log_file: str | Path | None = None,
    argv: Sequence[str] | None = None,
    config_file: str | Sequence[str] | None = None,
) -> list[str] | None:
    """Stop the run on a setting that is unknown or a boolean it cannot mean; make boolean spellings real booleans.

    The overrides are read from ``argv`` (the arguments after ``monai.bundle run``; by default this process's own
    command line, and nothing is checked when the process is not ``monai.bundle run``) and from the ``--args_file``
    they name. Known keys are every id of the ``--config_file`` files (merged as MONAI merges them; nested ids joined
    with ``#`` or ``::``), ``_meta_`` ids, the settings of ``--tracking``, and the arguments of ``monai.bundle run``
    itself (``config_file``, ``meta_file``, ``logging_file``, ``args_file``, ``run_id``, ``init_id``, ``final_id``,
    ``tracking``, ``workflow_type``, ...).

    A boolean setting (its value in the configs is JSON ``true``/``false``) accepts ``true``, ``false``, ``True``,
    ``False``, ``1`` and ``0`` (and a ``$`` expression or ``@`` reference). Fire turns ``true``/``false`` into
    strings and ``1``/``0`` into integers before MONAI sees them, and the bundle's config items have been built from
    those values by the time they reach any code of ours; so when such a spelling is present the process is started
    again, before any work, with the same command line in which it is written ``True``/``False``, which Fire reads
    as Python booleans (``os.execv``: same process id, environment and arguments otherwise, which ``torchrun``
    workers keep as well). With an explicit ``argv`` nothing is started: the normalised command line is returned.

    Args:
        log_file: where ``utils.errors.BriefErrors``, made the process's excepthook, appends the full traceback of
            a failed command (``None``, or no command line: the excepthook is left as it is).
        argv: the arguments after ``run``; this process's by default.
        config_file: the config files; those named by ``--config_file`` in ``argv`` by default.

    Returns:
        The command line with boolean spellings normalised when ``argv`` was given and it needed them, else None.

    Raises:
        SettingsError: unknown keys (each with the nearest known ones), or a boolean setting's value that is not a
            boolean (naming key and value).
    """
    own_command_line = argv is None
    argv = bundle_run_argv() if own_command_line else list(argv)
    if argv is None:
        return None
    if log_file is not None:
        install_brief_errors(log_file)
    overrides = _parse_fire_kwargs(argv)
    run_args = _run_argument_names()
    file_overrides = {}
    if "args_file" in overrides:
        from monai.bundle import ConfigParser

        file_overrides = ConfigParser.load_config_file(_fire_value(overrides["args_file"]))
    if config_file is None:
        config_file = _fire_value(overrides.get("config_file", file_overrides.get("config_file")))
    if config_file is None:
        return None  # monai.bundle run reports the missing config file itself
    config = _load_configs(config_file)
    known = set(known_ids(config)) | run_args
    known |= _tracking_ids(_fire_value(overrides.get("tracking", file_overrides.get("tracking"))))

    settings = {**file_overrides, **overrides}
    unknown = [key for key in settings if not _is_known(_normal_id(key), known)]
    if unknown:
        raise SettingsError(_unknown_message(unknown, known, config_file))

    bools = dict(_bool_ids(config))
    normalised = list(argv)
    problems = []
    for key, value in settings.items():
        default = bools.get(_normal_id(key))
        if default is None or key in run_args:
            continue
        from_command_line = key in overrides
        if from_command_line:
            meaning = _bool_word(value)
        else:  # args_file values are typed by JSON/YAML already
            meaning = value if isinstance(value, bool) or _is_config_syntax(value) else None
        if meaning is None:
            problems.append(f"--{key} {value!r}: {key} is a boolean setting (default {str(default).lower()}); "
                            f"give one of {', '.join(TRUE_WORDS + FALSE_WORDS)}")  # fmt: skip
        elif from_command_line and isinstance(meaning, bool) and value not in ("True", "False", True):
            normalised = _normalise(normalised, key, "True" if meaning else "False")
    if problems:
        raise SettingsError("invalid boolean setting(s): " + "; ".join(problems))
    if normalised == list(argv):
        return None
    if not own_command_line:
        return normalised
    _restart_with(normalised)
    return None  # not reached


def known_ids(config: Any, prefix: str = "") -> Iterator[str]:
    """Every id of ``config``: its keys, and those of nested dicts and lists (list positions), joined with ``#``."""
    items = config.items() if isinstance(config, Mapping) else enumerate(config) if isinstance(config, list) else ()
    for key, value in items:
        cid = f"{prefix}{key}"
        yield cid
        yield from known_ids(value, cid + _ID_SEP)


def _bool_ids(config: Any, prefix: str = "") -> Iterator[tuple[str, bool]]:
    items = config.items() if isinstance(config, Mapping) else enumerate(config) if isinstance(config, list) else ()
    for key, value in items:
        cid = f"{prefix}{key}"
        if isinstance(value, bool):
            yield cid, value
        yield from _bool_ids(value, cid + _ID_SEP)


def _load_configs(config_file: str | Sequence[str]) -> dict:
    from monai.bundle import ConfigParser

    files = config_file
    if isinstance(files, str) and not Path(files).is_file() and "," in files:
        files = files.split(",")
    for file in [files] if isinstance(files, (str, Path)) else files:
        if not Path(file).is_file():
            raise SettingsError(f"--config_file: cannot find the config file {file}")
    return ConfigParser.load_config_files(config_file)


def _run_argument_names() -> set[str]:
    """The arguments that ``monai.bundle run`` and the workflow it creates take themselves (not config overrides)."""
    from monai.bundle import ConfigWorkflow
    from monai.bundle.scripts import create_workflow, run, run_workflow

    names = set()
    for function in (run, run_workflow, create_workflow, ConfigWorkflow.__init__):
        for name, parameter in inspect.signature(function).parameters.items():
            if parameter.kind not in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL) and name != "self":
                names.add(name)
    return names


def _tracking_ids(tracking: Any) -> set[str]:
    """The settings that ``--tracking`` adds to the config (e.g. MLflow's ``tracking_uri``, ``experiment_name``)."""
    if not tracking:
        return set()
    from monai.bundle import ConfigParser
    from monai.bundle.utils import DEFAULT_EXP_MGMT_SETTINGS

    if isinstance(tracking, str) and tracking in DEFAULT_EXP_MGMT_SETTINGS:
        settings = DEFAULT_EXP_MGMT_SETTINGS[tracking]
    else:
        settings = ConfigParser.load_config_files(tracking)
    return set(known_ids(settings.get("configs", {})))


def _normal_id(key: str) -> str:
    return key.replace("::", _ID_SEP)


def _is_known(key: str, known: set[str]) -> bool:
    return key in known or key == "_meta_" or key.startswith("_meta_" + _ID_SEP)


def _unknown_message(unknown: list[str], known: set[str], config_file: Any) -> str:
    lines = []
    for key in unknown:
        nearest = _nearest(_normal_id(key), known)
        hint = f"nearest known keys: {', '.join(nearest)}" if nearest else "no similar key"
        lines.append(f"--{key} ({hint})")
    files = config_file if isinstance(config_file, str) else ", ".join(map(str, config_file))
    return (
        f"unknown setting(s) for the configs {files}: " + "; ".join(lines)
        + ". A misspelled setting would be ignored and the run would use the default; nothing was done."
    )


def _nearest(key: str, known: set[str], n: int = 3, cutoff: float = 0.6) -> list[str]:
    """The known ids most like ``key``: compared whole, and by their last part (``max_epoch`` finds
    ``train#trainer#max_epochs``)."""
    scores = {}
    for cid in known:
        score = difflib.SequenceMatcher(None, key, cid).ratio()
        if _ID_SEP not in key:
            score = max(score, difflib.SequenceMatcher(None, key, cid.rsplit(_ID_SEP, 1)[-1]).ratio())
        if score >= cutoff:
            scores[cid] = score
    return sorted(scores, key=lambda cid: (-scores[cid], cid.count(_ID_SEP), cid))[:n]


def _parse_fire_kwargs(argv: Sequence[str]) -> dict[str, Any]:
    """``--key value``, ``--key=value`` and ``--key`` alone (True), as Fire reads them; the raw strings are kept."""
    kwargs: dict[str, Any] = {}
    index = 0
    while index < len(argv):
        argument = argv[index]
        index += 1
        if argument == "--":  # what follows are Fire's own flags (--help, ...)
            break
        if not _is_flag(argument):
            continue  # a positional argument: run_id
        key, has_value, value = argument.lstrip("-").partition("=")
        key = key.replace("-", "_")
        if not has_value:
            if index < len(argv) and not _is_flag(argv[index]):
                value = argv[index]
                index += 1
            else:
                value = True
        kwargs[key] = value
    return kwargs


def _is_flag(argument: str) -> bool:
    # Fire's rule: "--name", or "-x" with a letter (a negative number is a value)
    return argument.startswith("--") or (len(argument) > 1 and argument[0] == "-" and argument[1].isalpha())


def _fire_value(value: Any) -> Any:
    """The Python value Fire makes of a command-line string (literals and containers; other words stay strings)."""
    if not isinstance(value, str):
        return value
    from fire.parser import DefaultParseValue

    return DefaultParseValue(value)


def _bool_word(value: Any) -> bool | str | None:
    """True/False for a boolean spelling, the value itself for config syntax ($expression, @reference, %macro)."""
    if value is True:
        return True
    if value in TRUE_WORDS:
        return True
    if value in FALSE_WORDS:
        return False
    return value if _is_config_syntax(value) else None


def _is_config_syntax(value: Any) -> bool:
    return isinstance(value, str) and value[:1] in ("$", "@", "%")


def _normalise(argv: list[str], key: str, word: str) -> list[str]:
    """``argv`` with the value of ``--key`` (either form, last occurrence as Fire keeps it) written ``word``."""
    out = list(argv)
    for index in range(len(out) - 1, -1, -1):
        argument = out[index]
        if not _is_flag(argument):
            continue
        name, has_value, _ = argument.lstrip("-").partition("=")
        if name.replace("-", "_") != key:
            continue
        if has_value:
            out[index] = f"{argument.split('=', 1)[0]}={word}"
        elif index + 1 < len(out) and not _is_flag(out[index + 1]):
            out[index + 1] = word
        break
    return out


def _restart_with(argv: list[str]) -> None:
    """Replace this process by ``python <interpreter options> -m monai.bundle run <argv>`` (see ``check_settings``)."""
    # sys.orig_argv = [python, <interpreter options>, -m, monai.bundle, run, <arguments>]; sys.argv[1:] is its tail
    head = sys.orig_argv[: len(sys.orig_argv) - (len(sys.argv) - 1)]
    command = [sys.executable, *head[1:], sys.argv[1], *argv]
    logger.info("restarting with boolean settings written True/False (Fire reads true/false as strings): %s",
                shlex.join(command))  # fmt: skip
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    logging.shutdown()
    os.execv(sys.executable, command)
