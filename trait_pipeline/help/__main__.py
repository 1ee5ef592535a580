"""``python -m trait_pipeline.help STAGE`` prints a stage's help; ``--write-docs`` regenerates
the key tables in docs/*.md and README.md from the stage YAML comments."""

from __future__ import annotations

import sys

from ..layout import PROJECT_ROOT as REPO_ROOT
from .stage_help import STAGES, format_help, write_docs


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--write-docs"]:
        files = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
        for path in write_docs(files):
            print(f"updated {path.relative_to(REPO_ROOT)}")
        return 0
    if not args or args[0] not in STAGES:
        print(f"usage: python -m trait_pipeline.help {{{','.join(STAGES)}}} [overrides] | --write-docs",
              file=sys.stderr)
        return 2
    print(format_help(args[0], args[1:]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
