"""`spondyscan` science commands: prepare | train | evaluate | explain | analyze | domain.

Each command lives in its own module exposing ``add_arguments(parser)`` and ``run(args) -> int``;
this file only wires them, so importing the CLI stays cheap (TensorFlow loads on demand).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from ml.clierror import CliError

__all__ = ["CliError", "add_commands", "build_parser", "main", "run_command"]

# command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "prepare": ("ml.data.prepare", "build a labelled, subject-disjoint dataset from raw sources"),
    "train": ("ml.training.cli", "train a model from a YAML config and write a bundle"),
    "evaluate": ("ml.evaluation.cli", "evaluate a bundle on a dataset split, update its manifest"),
    "explain": ("ml.explain.cli", "write heatmap overlays and a JSON summary for one image"),
    "analyze": ("ml.analyze", "segment, classify and explain one image with local bundles"),
    "domain": ("ml.domain_cli", "fit the applicability-domain reference on a training split"),
}


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register the science commands on a subparsers object (also used by the service CLI)."""
    for name, (module, help_text) in COMMANDS.items():
        # A command whose module fails to import is a broken checkout: say so, loudly.
        mod = importlib.import_module(module)
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        mod.add_arguments(p)


def run_command(args: argparse.Namespace) -> int:
    """Run the command chosen on the parsed arguments, turning user errors into one line."""
    # `evaluate --cv K` retrains models: it lives with training (evaluation never imports it).
    cv = getattr(args, "cv", None)
    module = importlib.import_module("ml.training.cli" if cv else args._module)
    try:
        return int((module.run_cv if cv else module.run)(args) or 0)
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"error: not found: {exc.filename or exc}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spondyscan", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    add_commands(sub)
    return parser


def configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    return run_command(args)


if __name__ == "__main__":
    sys.exit(main())
