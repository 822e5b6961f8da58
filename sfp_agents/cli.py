"""The ``sfp`` command line.

Each sub-command lives in its own module that defines::

    def configure(parser: argparse.ArgumentParser) -> None: ...   # add the command's arguments
    def run(args: argparse.Namespace) -> int: ...                  # do the work, return exit code

and is listed once in :data:`COMMANDS` (name -> (module, one-line help)). Modules are imported only
when their command runs, so ``sfp --help`` stays fast. Errors from the :mod:`sfp_env.errors`
hierarchy are printed as one readable message (exit code 2) instead of a traceback.

Every command also takes ``--plugins MODULE ...``: modules imported before the command runs (the
current folder first on the import path, as ``python -m`` has it), so backbones, planners,
rewards or data sources they register are known by name to configs, checkpoints and the
leaderboard. Options and ``KEY=VALUE`` overrides may come in any order.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from sfp_env import __version__
from sfp_env.errors import ConfigError, SFPError

#: name -> (module defining configure/run, help line)
COMMANDS: dict[str, tuple[str, str]] = {
    "data": ("sfp_agents.commands.data", "generate embedded data sets (sevir, nse, sst)"),
    "launch": ("sfp_agents.commands.launch",
               "run an sfp command in N processes (CPUs or GPUs): sfp launch -n 2 evaluate ..."),
    "train-gwm": ("sfp_agents.training.pretrain", "Stage 1: pretrain a generative world model"),
    "train-agent": ("sfp_agents.training.self_train", "Stage 2: self-train an agent (or baseline)"),
    "train-prior": ("sfp_agents.training.prior",
                    "learn the code prior p(codes | past) of a frozen world model"),
    "evaluate": ("sfp_agents.training.evaluate", "evaluate an agent checkpoint on an environment"),
    "train-critic": ("sfp_agents.training.critic",
                     "train a critic that ranks imagined futures without the truth"),
    "calibrate": ("sfp_agents.policies.calibration",
                  "fit a calibration (quantile mapping) to a trained baseline"),
    "leaderboard": ("sfp_agents.bench.leaderboard",
                    "baseline vs +SFP leaderboard per task/backbone"),
    "visualize": ("sfp_agents.visualize", "PNG panel and GIF of truth vs forecasts"),
    "bench": ("sfp_agents.bench.throughput", "throughput benchmarks (ratios on this machine)"),
    "headroom": ("sfp_agents.headroom",
                 "oracle best-of-N headroom of planning candidates (top-K vs prior samples)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sfp", description="Spatiotemporal Forecasting as Planning (sfp)."
    )
    parser.add_argument("--version", action="version", version=f"sfp {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_module, help_line) in COMMANDS.items():
        sub.add_parser(name, help=help_line, add_help=False)
    return parser


def import_plugins(modules: Sequence[str]) -> None:
    """Import the plug-in ``modules`` (dotted names), the current folder first on the path.

    Raises:
        ConfigError: a module that cannot be found (an error raised *inside* a plug-in is
            left as it is: its traceback is the user's best guide).
    """
    cwd = os.getcwd()
    if modules and cwd not in sys.path:
        sys.path.insert(0, cwd)
    for module in modules:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name is None or not (e.name == module or module.startswith(e.name + ".")):
                raise  # the plug-in itself imports something missing
            raise ConfigError(
                f"plug-in module {module!r} not found (looked in {cwd} and the installed "
                "packages)",
                fix="run from the folder that holds it, pass its dotted name (my_package.my_"
                "module), or add its folder to PYTHONPATH",
            ) from None


def split_plugins(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """``(plug-in modules, the other arguments)``: ``--plugins A B`` (up to the next option or
    ``KEY=VALUE`` override) or ``--plugins=A,B``, anywhere in ``argv`` (also after a
    sub-command such as ``sfp data generate``)."""
    plugins: list[str] = []
    rest: list[str] = []
    taking = False
    for arg in argv:
        if arg == "--plugins":
            taking = True
        elif arg.startswith("--plugins="):
            plugins += [m for m in arg.split("=", 1)[1].split(",") if m]
            taking = False
        elif taking and not arg.startswith("-") and "=" not in arg:
            plugins.append(arg)
        else:
            taking = False
            rest.append(arg)
    return plugins, rest


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``sfp`` and ``python -m sfp_agents``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0] not in COMMANDS:
        parser.parse_args(argv or ["--help"])
        return 2
    name, given = argv[0], argv[1:]
    module_name, help_line = COMMANDS[name]
    plugins, rest = split_plugins(given)
    try:  # first, so that what they register is known to the command's options
        import_plugins(plugins)
    except SFPError as e:
        print(f"sfp {name}: error: {e}", file=sys.stderr)
        return 2
    module = importlib.import_module(module_name)
    cmd_parser = argparse.ArgumentParser(prog=f"sfp {name}", description=help_line)
    module.configure(cmd_parser)
    cmd_parser.add_argument(  # taken out of argv by split_plugins; listed here for --help
        "--plugins", nargs="+", default=[], metavar="MODULE",
        help="modules to import first (they register backbones, planners, rewards, data "
        "sources, ...); anywhere on the line, or --plugins=A,B",
    )
    try:  # options and KEY=VALUE overrides in any order
        args = cmd_parser.parse_intermixed_args(rest)
    except TypeError:  # a command with sub-commands (sfp data ...): argparse's usual order
        args = cmd_parser.parse_args(rest)
    args.plugins = plugins
    args.argv = list(given)  # the command's arguments as given (e.g. for a "reproduce" line)
    try:
        return int(module.run(args) or 0)
    except SFPError as e:
        print(f"sfp {name}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # a trainer has said what it saved and how to continue
        print(f"sfp {name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
