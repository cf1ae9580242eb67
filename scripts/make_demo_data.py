"""Write synthetic demo data in a bundle's challenge layout.

Usage: ``python scripts/make_demo_data.py BUNDLE OUT_DIR [--cases N] [--seed S] [bundle options]``;
``python scripts/make_demo_data.py BUNDLE --help`` lists a bundle's options. Each bundle's generator is
``data/synthetic/<bundle>.py`` (see CONTRIBUTING.md); new ones are found automatically.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # scripts/ is not a package: make the repository's packages importable
    sys.path.insert(0, str(REPO_ROOT))

from data.synthetic import available_generators  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    """The command line: one sub-command per generator module in ``data/synthetic``."""
    parser = argparse.ArgumentParser(
        prog="make_demo_data.py",
        description="Write synthetic demo data in a bundle's exact challenge layout (for demos and tests; "
        "not a substitute for the challenge data).",
    )
    commands = parser.add_subparsers(dest="bundle", metavar="BUNDLE", required=True)
    for name, module in available_generators().items():
        summary = (module.__doc__ or name).strip().splitlines()[0]
        command = commands.add_parser(name, help=summary, description=module.__doc__)
        command.formatter_class = argparse.RawDescriptionHelpFormatter
        command.add_argument("out_dir", metavar="OUT_DIR", type=Path, help="output folder (created if needed)")
        command.add_argument("--cases", type=int, default=20, help="number of cases (default 20)")
        command.add_argument("--seed", type=int, default=0, help="random seed; same seed, same data (default 0)")
        module.add_arguments(command)
        command.set_defaults(generate=module.generate)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Parse ``argv`` and run the chosen generator."""
    args = vars(build_parser().parse_args(argv))
    generate = args.pop("generate")
    out_dir, cases, seed = args.pop("out_dir"), args.pop("cases"), args.pop("seed")
    args.pop("bundle")
    generate(out_dir, cases, seed, **args)
    print(f"wrote {cases} cases to {out_dir}")


if __name__ == "__main__":
    main()
