"""How a stage becomes a Hydra app: ``-m`` anywhere, easy positions, early one-line errors.

A stage module ends with::

    main = stage_main("steer")(run)      # run(cfg) does the work
    if __name__ == "__main__":
        main()

What this adds to plain ``@hydra.main``:

* ``-m``/``--multirun`` is accepted anywhere on the line (argparse rejects it after an
  override), so ``python -m trait_pipeline.steer model_variant=rm_lora -m layer=10,20`` works.
* ``position=response[:5]`` needs no quoting: the brackets collide with Hydra's list syntax,
  so values of ``*position`` keys are quoted for Hydra (sweeps too: ``position=response[:5],response[:]``).
* ``--cfg`` prints the resolved config (the model a variant loads, the job's output dir).
* Before Hydra runs, every combination of experiment / variant / trait on the line is
  composed and checked, so an unknown name fails in one line before any model loads.
* In the job, a :class:`PipelineError` prints ``error: <message>`` and exits with status 2;
  so does an output folder that cannot be written (read-only, full, another user's).
* No folder is left behind by a failed command: before Hydra makes ``runs/<id>``, the output
  folder is checked to be writable and the stage's own ``precheck`` runs; if the job still
  fails with a one-line error, the run folder and every folder this command created are
  removed (a sweep keeps its jobs' run folders: the launcher points at their logs).
* ``-h``/``--help`` prints the stage's own help (``trait_pipeline.help``: description, every
  key with its default and meaning, the experiment's variants, examples, the doc page);
  ``--hydra-help`` still prints Hydra's.

Nothing here imports torch: ``--help`` and ``--cfg job`` stay well under a second.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import re
import sys
from collections.abc import Callable
from pathlib import Path

from .errors import PipelineError, one_line

log = logging.getLogger(__name__)

_MULTIRUN_FLAGS = ("-m", "--multirun")
_NO_PREFLIGHT_FLAGS = ("-h", "--help", "--hydra-help", "-sc", "--shell-completion", "--info", "-i")
_POSITION_KEY = re.compile(r"^(?P<prefix>\+{0,2}|~)(?P<key>(?:[\w.]+\.)?position)=(?P<value>.*)$")
_CHECKED_KEYS = ("experiment", "model_variant", "trait", "judge", "vectors.model_variant")
_MAX_PREFLIGHT_COMBOS = 64


def _split_top_level(value: str) -> list[str]:
    """Split on commas that are not inside brackets: ``a[:5],b[:]`` -> ``['a[:5]', 'b[:]']``."""
    parts, depth, cur = [], 0, ""
    for ch in value:
        if ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return parts


def quote_positions(arg: str) -> str:
    """Quote bracketed position values for Hydra's override grammar."""
    m = _POSITION_KEY.match(arg)
    if not m or "[" not in m["value"] or m["value"][:1] in "'\"" or "(" in m["value"]:
        return arg
    quoted = ",".join(f"'{p}'" for p in _split_top_level(m["value"]))
    return f"{m['prefix']}{m['key']}={quoted}"


_INFO_CHOICES = ("all", "config", "defaults", "defaults-tree", "plugins", "searchpath")


def _info_last(argv: list[str]) -> list[str]:
    """``--info [what]`` moved to the end: argparse would take ``--info key=value``'s override
    for the (optional) topic and reject it."""
    for i, a in enumerate(argv):
        if a in ("--info", "-i"):
            topic = argv[i + 1:i + 2] if argv[i + 1:i + 2] and argv[i + 1] in _INFO_CHOICES else []
            return argv[:i] + argv[i + 1 + len(topic):] + [a, *topic]
    return argv


def normalize_argv(argv: list[str]) -> list[str]:
    """Move ``-m`` to the front, quote positions, and resolve ``--cfg`` output."""
    flags = [a for a in argv if a in _MULTIRUN_FLAGS]
    rest = _info_last([quote_positions(a) for a in argv if a not in _MULTIRUN_FLAGS])
    if any(a in ("--cfg", "-c") or a.startswith("--cfg=") for a in rest) and "--resolve" not in rest:
        rest.append("--resolve")
    return flags[:1] + rest


def _overrides(argv: list[str]) -> list[str]:
    """The override arguments of a command line (not flags, not their values)."""
    takes_value = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name",
                   "-cn", "--config-dir", "-cd", "--experimental-rerun"}
    out, skip = [], False
    for prev, a in zip(["", *argv], argv):
        if skip:
            skip = False
            continue
        if a in takes_value:
            skip = True
            continue
        if a.startswith("-"):
            continue
        if a in _INFO_CHOICES and prev in ("--info", "-i"):
            continue  # the topic of --info, not an override
        out.append(a)
    return out


def _expand(overrides: list[str]) -> list[list[str]]:
    """Concrete override lists for each combination of the sweeps of the checked keys."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    fixed, axes = [], []
    for o in parsed:
        if o.is_sweep_override():
            if o.get_key_element() in _CHECKED_KEYS:
                axes.append([f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()])
            # other sweeps (layer=10,20) cannot make composition fail; leave them out
        else:
            fixed.append(o.input_line)
    combos = [fixed + list(c) for c in itertools.product(*axes)] if axes else [fixed]
    return combos[:_MAX_PREFLIGHT_COMBOS]


def _missing_option_message(exc: Exception) -> str:
    text = str(exc)
    m = re.search(r"Could not find '([^']+)/([^']+)'", text)
    if m:
        group, name = m.group(1), m.group(2)
        options = re.findall(r"^\s+(\S+)\s*$", text.split("Available options", 1)[-1], re.MULTILINE)
        avail = ", ".join(o for o in options if not o.startswith("_")) or "(none)"
        return f"unknown {group} {name!r}; available: {avail}"
    return one_line(text)


def check_config_dirs() -> None:
    """``$TRAIT_PIPELINE_PROJECT`` and every dir of ``$TRAIT_PIPELINE_CONFIG_PATH`` (or
    ``--config-dir``) must exist."""
    import os

    from .layout import CONFIG_PATH_ENV, PROJECT_ENV, project_dir, user_config_dirs

    if os.environ.get(PROJECT_ENV) and not project_dir().is_dir():
        raise PipelineError(f"${PROJECT_ENV}={os.environ[PROJECT_ENV]!r} is not a directory; "
                            "expected your project dir (holding conf/, datasets/, experiments/)")
    for d in user_config_dirs():
        if not d.is_dir():
            raise PipelineError(f"config dir {d} does not exist (from --config-dir or "
                                f"${CONFIG_PATH_ENV}={os.environ.get(CONFIG_PATH_ENV, '')!r}); "
                                "expected a directory holding experiment/, model_variant/, ...")


def take_config_dirs(argv: list[str]) -> list[str]:
    """Remove ``--config-dir``/``-cd DIR`` from argv; put DIR first in ``$TRAIT_PIPELINE_CONFIG_PATH``.

    So the early checks and Hydra search the same dirs, in the same order (before the shipped
    configs; stock Hydra would put it after them, where it could not shadow a shipped preset).
    """
    import os
    from pathlib import Path

    from .layout import CONFIG_PATH_ENV

    dirs, rest, it = [], [], iter(argv)
    for a in it:
        if a in ("--config-dir", "-cd"):
            dirs.append(next(it, ""))
        elif a.startswith("--config-dir="):
            dirs.append(a.split("=", 1)[1])
        else:
            rest.append(a)
    if dirs:
        old = os.environ.get(CONFIG_PATH_ENV, "")
        new = [str(Path(d).expanduser().resolve()) for d in dirs if d]
        os.environ[CONFIG_PATH_ENV] = os.pathsep.join([*new, *([old] if old else [])])
    return rest


# the folders between a single run's output dir and the nearest one that existed before it
_CREATED_CHAIN: list[Path] = []


def _missing_chain(path: Path) -> list[Path]:
    """``path`` and its ancestors that do not exist yet, deepest first."""
    out, p = [], Path(path).absolute()
    while not p.exists() and p.parent != p:
        out.append(p)
        p = p.parent
    return out


def preflight(config_name: str, argv: list[str],
              precheck: Callable | None = None) -> None:
    """Compose and validate every combination on the command line; raise PipelineError.

    Also checks that each job's output folder can be written, and runs the stage's
    ``precheck(cfg)`` (its own settings and input files), so bad input fails before Hydra
    creates any folder.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException

    from .config import validate
    from .judges.readiness import check_judge_ready
    from .layout import CONF_DIR
    from .safety.files import check_writable

    check_config_dirs()
    # --cfg only prints the config: a missing judge key must not stop it
    runs = not any(a in ("--cfg", "-c") or a.startswith("--cfg=") for a in argv)
    # hydra.* settings cannot make a stage's config fail, except where configs are searched
    overrides = [a for a in _overrides(argv)
                 if not a.startswith(("hydra/", "hydra.")) or a.startswith("hydra.searchpath=")]
    inspect_only = any(a in ("--cfg", "-c") or a.startswith("--cfg=") for a in argv)
    try:
        combos = _expand(overrides)
    except HydraException as exc:
        raise PipelineError(f"cannot parse the command line: {one_line(exc)}") from None
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfgs = []
            for combo in combos:  # every name first: a bad one fails the same way anywhere
                try:
                    cfg = compose(config_name=config_name, overrides=combo)
                except HydraException as exc:
                    raise PipelineError(_missing_option_message(exc)) from None
                validate(cfg)
                cfgs.append(cfg)
            if inspect_only:  # --cfg prints the config: it writes nothing, needs no input
                return
            for cfg in cfgs:
                out = cfg.get("output_dir")
                if out is not None:
                    check_writable(Path(str(out)))
                    if len(combos) == 1 and not any(a in _MULTIRUN_FLAGS for a in argv):
                        _CREATED_CHAIN[:] = _missing_chain(Path(str(out)) / "runs")
                if runs:  # a judge that cannot answer fails here, not after the model loads
                    check_judge_ready(cfg)
                if precheck is not None:
                    precheck(cfg)
    finally:
        GlobalHydra.instance().clear()


def _start_record(cfg):
    """The job's resolved snapshot and ``run.json`` in its Hydra run folder (None outside Hydra)."""
    from omegaconf import OmegaConf

    from .config import hydra_snapshot_path
    from .review import run_record

    snap = hydra_snapshot_path()
    if snap is None:
        return None
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    plain = OmegaConf.to_container(cfg, resolve=True)
    plain.pop("hydra", None)
    multirun = hc.mode == RunMode.MULTIRUN
    run_dir = snap.parent.parent
    return run_record.start(
        run_dir, plain, stage=plain.get("stage"), overrides=list(hc.overrides.task),
        run_id=run_dir.name, sweep_id=Path(hc.sweep.dir).name if multirun else None,
        job_num=int(hc.job.num) if multirun else None)


def _shows_config(argv: list[str]) -> bool:
    """``--cfg ...`` or ``--resolve`` alone: we print the config ourselves. Hydra's own printer
    resolves ``--cfg hydra`` without the job config, where ``${output_dir}`` lives, and
    rejects ``--resolve`` without ``--cfg``."""
    if any(a in _NO_PREFLIGHT_FLAGS for a in argv):
        return False
    return any(a in ("--cfg", "-c", "--resolve") or a.startswith("--cfg=") for a in argv)


def _to_log_files(msg: str) -> None:
    """Record ``msg`` in the job's log file without a second copy on the console.

    The console gets the error once, from the print to stderr; Hydra's console handler
    would otherwise repeat it.
    """
    record = logging.LogRecord(log.name, logging.ERROR, __file__, 0, msg, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def _run_task(task: Callable, cfg) -> object:
    from .config import validate
    from .judges.readiness import check_judge_ready
    from .review import outcome, run_record
    from .safety.files import WRITE_ERRNOS, write_error_message

    active = None
    try:
        validate(cfg)
        check_judge_ready(cfg)  # before the stage loads any model
        active = _start_record(cfg)
        try:
            returned = task(cfg)
        except OSError as exc:
            if exc.errno not in WRITE_ERRNOS:
                raise
            raise PipelineError(write_error_message(exc)) from None
    except PipelineError as exc:
        _to_log_files(f"error: {one_line(exc)}")
        print(f"error: {one_line(exc)}", file=sys.stderr, flush=True)
        if active is not None:
            active.finish("failed", error=one_line(exc))
        _remove_single_run_folders(cfg)
        stop = SystemExit(2)
        stop.error = one_line(exc)  # so a sweep launcher can name the error, not just the status
        raise stop from None
    except KeyboardInterrupt:
        if active is not None:
            active.finish("killed", signal="SIGINT")
        raise
    except BaseException as exc:
        if active is not None:
            active.finish("failed", error=one_line(exc) or type(exc).__name__)
        raise
    finally:
        run_record.stop()
    if active is not None:
        active.finish("done", result=outcome.of(
            active.record.stage, returned, active.snapshot_file,
            float(cfg.get("min_coherence") or 75.0)))
    return returned


def _remove_single_run_folders(cfg) -> None:
    """After a one-line error in a single run: remove its run folder (log, .hydra/) and the
    folders this command created, so a failed command leaves nothing behind. Only empty
    folders are removed outside the run folder: another process's files are never touched."""
    import shutil

    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf.errors import OmegaConfBaseException

    try:
        hc = HydraConfig.get()
        if hc.mode != RunMode.RUN:
            return  # a sweep job: its log is where the launcher's report points
        run_dir = Path(hc.runtime.output_dir).absolute()
        expected = Path(str(cfg.output_dir)).absolute() / "runs"
    except (ValueError, AttributeError, OmegaConfBaseException):
        return
    if run_dir.parent != expected:  # hydra.run.dir set by hand: not ours to remove
        return
    for logger in [logging.getLogger(), *[logging.getLogger(n) for n in logging.root.manager.loggerDict]]:
        for h in list(getattr(logger, "handlers", [])):
            if isinstance(h, logging.FileHandler) and Path(h.baseFilename).is_relative_to(run_dir):
                h.close()
                logger.removeHandler(h)
    shutil.rmtree(run_dir, ignore_errors=True)
    if _CREATED_CHAIN:  # the topmost folder this command created, and what it made below it
        _remove_empty_tree(_CREATED_CHAIN[-1])


def _remove_empty_tree(top: Path) -> None:
    import os

    for dirpath, _dirs, files in os.walk(top, topdown=False):
        for name in files:  # empty lock files of ours (filelock keeps them on Unix)
            lock = Path(dirpath) / name
            if name.endswith(".lock") and lock.stat().st_size == 0:
                lock.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            os.rmdir(dirpath)  # fails, as wanted, on a folder that is not empty


def stage_main(config_name: str, precheck: Callable | None = None
               ) -> Callable[[Callable], Callable[[], None]]:
    """Turn ``run(cfg)`` into the console entry point of a stage (see module docstring).

    ``precheck(cfg)`` (optional, torch-free) checks the stage's own settings and input
    files before Hydra creates the run folder; it raises :class:`PipelineError`.
    """

    def deco(task: Callable) -> Callable[[], None]:
        def main() -> None:
            import hydra

            from . import resolvers
            from .layout import CONF_DIR

            resolvers.register()
            argv = normalize_argv(take_config_dirs(sys.argv[1:]))
            if any(a in _NO_PREFLIGHT_FLAGS for a in argv) and _overrides(argv):
                # --help / --info compose the config too: a bad name is one line, not a traceback
                from .review.compose import check_composes

                try:
                    check_composes(config_name, _overrides(argv))
                except PipelineError as exc:
                    print(f"error: {one_line(exc)}", file=sys.stderr)
                    raise SystemExit(2) from None
            if any(a in ("-h", "--help") for a in argv):
                from .help import format_help

                print(format_help(config_name, _overrides(argv)))
                raise SystemExit(0)
            if _shows_config(argv):
                from .review.compose import show_cfg

                try:
                    raise SystemExit(show_cfg(config_name, argv))
                except PipelineError as exc:
                    print(f"error: {one_line(exc)}", file=sys.stderr)
                    raise SystemExit(2) from None
            if not any(a in _NO_PREFLIGHT_FLAGS for a in argv):
                try:
                    preflight(config_name, argv, precheck)
                except PipelineError as exc:
                    print(f"error: {one_line(exc)}", file=sys.stderr)
                    raise SystemExit(2) from None
            sys.argv = [sys.argv[0], *argv]
            job = functools.partial(_run_task, task)
            functools.update_wrapper(job, task)
            try:
                hydra.main(config_path=str(CONF_DIR), config_name=config_name, version_base="1.3")(job)()
            except KeyboardInterrupt:  # Ctrl-C: no traceback (a SLURM sweep says more, exit 130 too)
                print("interrupted", file=sys.stderr, flush=True)
                raise SystemExit(130) from None

        main.__doc__ = task.__doc__
        return main

    return deco
