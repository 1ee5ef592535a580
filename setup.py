"""Build hook: the wheel carries the repository's top-level ``conf/`` and ``datasets/``.

They stay at the top of the repository (the design's layout, what a reviewer diffs); at build
time ``build_py`` copies them into the package as ``trait_pipeline/_shipped/{conf,datasets}``,
where ``trait_pipeline.layout`` finds them in an installed wheel. Everything else is declared in
pyproject.toml.

Git-ignored, machine-specific files (``conf/local/*.yaml``, ``conf/hydra/launcher/site/``) never
ship. The copy replaces the previous one, so a config removed from the repository cannot linger
in a stale ``build/`` folder. An editable install copies nothing: the package then reads the
checkout's own ``conf/`` and ``datasets/``.
"""

from __future__ import annotations

import fnmatch
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
SHIPPED = ("conf", "datasets")
TARGET = Path("trait_pipeline") / "_shipped"
NEVER_SHIPPED = ("conf/local/*.yaml", "conf/hydra/launcher/site/*", "*/__pycache__/*", "*.pyc",
                 "*/.DS_Store")


def shipped_files(root: Path = HERE) -> list[Path]:
    """The files of conf/ and datasets/ that go into the wheel, relative to ``root``."""
    out = []
    for top in SHIPPED:
        for path in sorted((root / top).rglob("*")):
            rel = path.relative_to(root).as_posix()
            if path.is_file() and not any(fnmatch.fnmatch(rel, p) for p in NEVER_SHIPPED):
                out.append(Path(rel))
    return out


class BuildPyWithShippedData(build_py):
    """``build_py``, then copy conf/ and datasets/ into the package (not for editable installs)."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        dest = Path(self.build_lib) / TARGET
        shutil.rmtree(dest, ignore_errors=True)
        for rel in shipped_files():
            out = dest / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(HERE / rel, out)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs = list(super().get_outputs(include_bytecode))
        if not getattr(self, "editable_mode", False):
            outputs += [str(Path(self.build_lib) / TARGET / rel) for rel in shipped_files()]
        return outputs


setup(cmdclass={"build_py": BuildPyWithShippedData})
