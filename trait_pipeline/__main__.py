"""``trait-pipeline <command> [args]`` (or ``python -m trait_pipeline <command>``): one front door.

Each command is the module ``python -m trait_pipeline.<module>`` would run, started the same
way (``runpy``), so ``trait-pipeline steer model_variant=rm_lora -m layer=10,20`` and
``python -m trait_pipeline.steer model_variant=rm_lora -m layer=10,20`` are the same run::

    $ trait-pipeline --help            # the commands, one line each
    $ trait-pipeline steer --help      # a command's own help

A new command is one entry in :data:`COMMANDS`. Nothing here imports torch.
"""

from __future__ import annotations

import runpy
import sys
from dataclasses import dataclass

from . import __version__


@dataclass(frozen=True)
class Command:
    """A ``trait-pipeline`` subcommand: the module it runs and what it is for, in one line."""

    module: str
    summary: str


COMMANDS: dict[str, Command] = {
    "extract": Command("trait_pipeline.extract", "extract trait vectors from a model variant"),
    "steer": Command("trait_pipeline.steer", "steer generation with trait vectors and judge it"),
    "infer": Command("trait_pipeline.infer", "generate and monitor trait projections per token"),
    "compare": Command("trait_pipeline.compare", "compare two variants' projections on a prompt set"),
    "migrate": Command("trait_pipeline.migrate", "move an old experiment into the variant layout"),
    "serve": Command("trait_pipeline.serve", "browse results in the dashboard"),
    "status": Command("trait_pipeline.sweep_status", "what became of each job of a sweep"),
    "runs": Command("trait_pipeline.runs", "one line per run: status, overrides, main result"),
    "diff": Command("trait_pipeline.diff", "what two runs/compositions ran with; --rev: a config change"),
    "demo": Command("trait_pipeline.demo", "run the whole pipeline on the embedded demo (CPU, offline)"),
}


def usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = [
        f"trait-pipeline {__version__}: extract, steer with and monitor trait vectors across model variants",
        "",
        "usage: trait-pipeline <command> [overrides or options]",
        "",
        "commands:",
        *(f"  {name:<{width}}  {cmd.summary}" for name, cmd in COMMANDS.items()),
        "",
        ("`trait-pipeline <command> --help` describes a command; "
         "`python -m trait_pipeline.<module>` runs the same thing."),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if args[0] == "--version":
        print(f"trait-pipeline {__version__}")
        return 0
    if args[0] in ("-m", "--multirun") and len(args) > 1:  # `trait-pipeline -m steer ...`
        args = [args[1], args[0], *args[2:]]
    name, rest = args[0], args[1:]
    cmd = COMMANDS.get(name)
    if cmd is None:
        print(f"error: unknown command {name!r}; expected one of: {', '.join(COMMANDS)}",
              file=sys.stderr)
        return 2
    sys.argv = [f"trait-pipeline {name}", *rest]
    try:
        runpy.run_module(cmd.module, run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        code = exc.code
        if code is None:
            return 0
        if isinstance(code, int):
            return code
        print(code, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
