"""The ``gbmi`` command line.

Listing commands load plugins but never import torch or transformer_lens.  Errors print one line
(``Error: ...``) and exit with status 1; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import fnmatch
import json
import warnings

import click

from .errors import GbmiError, TooLarge
from .report import TABLE_WIDTH, format_table as _table


class _Group(click.Group):
    def main(self, *args, **kwargs):
        """Click's main, but a usage error (a bad option value, a missing file) is one line naming the cause
        and where to look, like every other error, not a usage block."""
        import sys

        kwargs.pop("standalone_mode", None)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except click.UsageError as error:
            where = f" (see `{error.ctx.command_path} --help`)" if error.ctx is not None else ""
            click.echo(f"Error: {' '.join(error.format_message().split())}{where}", err=True)
            sys.exit(error.exit_code)
        except click.ClickException as error:
            error.show()
            sys.exit(error.exit_code)
        except click.exceptions.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except GbmiError as error:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"Error: {error}", err=True)
            ctx.exit(1)
        except Exception as error:  # noqa: BLE001 - one clear line, not a traceback
            if ctx.obj and ctx.obj.get("debug"):
                raise
            from .memory import format_size, is_allocation_failure, memory_budget

            if is_allocation_failure(error):
                click.echo(f"Error: out of memory ({type(error).__name__}); the memory budget is "
                           f"{format_size(memory_budget())}: set a smaller --max-memory so strategies "
                           f"plan their chunks within what this machine has", err=True)
                ctx.exit(1)
            click.echo(f"Error: {type(error).__name__}: {error} (run `gbmi --debug ...` for the traceback)",
                       err=True)
            ctx.exit(1)


def _registry(ctx):
    if "registry" not in ctx.obj:
        from . import get_registry

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ctx.obj["registry"] = get_registry()
        for warning in caught:  # one line per skipped plugin, not Python's two-line warning format
            click.echo(f"Warning: {warning.message}", err=True)
    return ctx.obj["registry"]


class _PathOrURL(click.Path):
    """A local path checked as :class:`click.Path` checks it, or a store URL / archive taken as it is."""

    def convert(self, value, param, ctx):
        from .objectstore import is_url

        return value if is_url(value) else super().convert(value, param, ctx)


def _store(ctx):
    from .store import Store

    return Store(ctx.obj.get("store"))


#: Commands that run no tensor work, so do not spend a moment measuring the machine.
_NO_TENSOR_WORK = {"plugins", "list-tasks", "list-strategies", "store", "results", "report", None}


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--store", type=_PathOrURL(file_okay=False), envvar="GBMI_STORE", default=None, metavar="DIR|URL",
              help="Store: a directory, an fsspec URL (s3://bucket/prefix), or a read-only archive (sweep.zip, "
                   "zip::https://...); default: $GBMI_STORE, else ~/.local/share/gbmi/store.")
@click.option("--max-memory", default=None, metavar="SIZE",
              help="Memory budget of a proof, e.g. 2G (default: $GBMI_MAX_MEMORY, else a quarter of free memory).")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.version_option(package_name="gbmi-core", prog_name="gbmi")
@click.pass_context
def main(ctx, store, max_memory, debug):
    """gbmi: compact, computer-checked lower bounds on a model's accuracy over every input."""
    import os

    from .memory import MEMORY_ENV, parse_size

    ctx.ensure_object(dict)
    ctx.obj.update(store=store, debug=debug)
    if ctx.invoked_subcommand not in _NO_TENSOR_WORK:
        from .threads import size_threads

        size_threads()  # the free cores only: a busy core stalls every parallel region (see threads.py)
    if max_memory is not None:
        try:
            os.environ[MEMORY_ENV] = str(parse_size(max_memory))  # workers of a sweep inherit it
        except GbmiError as error:
            raise click.BadParameter(str(error), param_hint="--max-memory") from None


def _echo_json(data) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True))


@main.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def plugins_cmd(ctx, as_json):
    """List the plugins found through the `gbmi` entry points, and what happened to each."""
    registry = _registry(ctx)
    infos = [
        {"name": i.name, "distribution": i.distribution, "version": i.version, "status": i.status,
         "error": i.error, "hooks": list(i.hooks)}
        for i in registry.plugins()
    ]
    if as_json:
        _echo_json(infos)
        return
    if not infos:
        click.echo("No gbmi plugins are installed.")
        return
    rows = [[i["name"], i["distribution"] or "-", i["version"] or "-", i["status"] + (f": {i['error']}" if i["error"] else "")]
            for i in infos]
    click.echo(_table(rows, ["plugin", "distribution", "version", "status"]))


@main.command("list-tasks")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def list_tasks(ctx, as_json):
    """List the registered tasks."""
    registry = _registry(ctx)
    tasks = [{"name": t.name, "summary": t.summary, "input_space": t.input_space,
              "presets": sorted(t.presets), "plugin": registry.provider("task", t.name)} for t in registry.tasks()]
    if as_json:
        _echo_json(tasks)
        return
    if not tasks:
        click.echo("No tasks are registered (see `gbmi plugins`).")
        return
    click.echo(_table([[t["name"], t["plugin"], t["summary"]] for t in tasks], ["task", "plugin", "summary"]))


@main.command("list-strategies")
@click.option("--task", default=None, help="Only this task's strategies.")
@click.option("--wide", is_flag=True, help="Full strategy names and summaries (lines may be long).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def list_strategies(ctx, task, wide, as_json):
    """List the registered proof strategies, sorted by task and name (short names fit 120 columns; --strategy
    takes either)."""
    registry = _registry(ctx)
    items = [{"task": s.task, "name": s.name, "short_name": s.spec.display_name, "summary": s.summary,
              "complexity": s.complexity, "family": s.spec.family, "plugin": s.plugin}
             for s in registry.strategies(task)]
    if as_json:
        _echo_json(items)
        return
    if not items:
        click.echo("No proof strategies are registered (see `gbmi plugins`).")
        return
    rows = [[s["task"], s["name"] if wide else s["short_name"], s["complexity"], s["summary"]] for s in items]
    click.echo(_table(rows, ["task", "strategy", "cost", "summary"], width=None if wide else TABLE_WIDTH))
    if not wide and any(s["name"] != s["short_name"] for s in items):
        click.echo("(short names, which --strategy takes too; --wide or --json gives the full ones)", err=True)


def _config_options(function):
    function = click.option("--set", "assignments", multiple=True, metavar="FIELD=VALUE",
                            help="Override one config field (VALUE is read as JSON); repeatable.")(function)
    function = click.option("--config", "config_file", type=click.Path(dir_okay=False),
                            help="A .json or .toml config file.")(function)
    function = click.option("--preset", default=None, help="A named preset of the task (see `gbmi list-tasks`).")(function)
    function = click.option("--seed", type=int, default=None, help="The config's seed.")(function)
    return function


def _model_file_options(function):
    function = click.option("--allow-pickle", is_flag=True,
                            help="Accept a whole pickled module in a .pt file (runs code from the file: only for "
                                 "files you trust).")(function)
    function = click.option("--model-config", "model_config", type=click.Path(dir_okay=False), default=None,
                            help="A side-car JSON of the model config's fields, cfg.to_dict() (default: FILE.json beside the "
                                 "model, else inferred from the weights).")(function)
    return function


def _make_config(registry, task, seed, preset, config_file, assignments):
    from .config import parse_assignment

    overrides = dict(parse_assignment(a) for a in assignments)
    if seed is not None:
        overrides["seed"] = seed
    return registry.make_config(task, preset=preset, config_file=config_file, overrides=overrides)


@main.command("train")
@click.argument("task")
@_config_options
@click.option("--retrain", is_flag=True, help="Train even if the store already holds this model.")
@click.pass_context
def train_cmd(ctx, task, seed, preset, config_file, assignments, retrain):
    """Train TASK's model (or load it from the store) and print its metrics."""
    from .config import content_hash

    registry = _registry(ctx)
    config = _make_config(registry, task, seed, preset, config_file, assignments)
    store = _store(ctx)
    model, metrics = registry.train_or_load(task, config, store, retrain=retrain)
    from .models import model_hash

    click.echo(f"task {task}  config {content_hash(config)}  model {model_hash(model)}  store {store.root}")
    for key in sorted(metrics):
        click.echo(f"  {key}: {metrics[key]}")


def _select_strategies(registry, task, patterns):
    strategies = registry.strategies(task)
    if not patterns or "all" in patterns:
        return strategies
    chosen, seen = [], set()
    for pattern in patterns:
        if any(ch in pattern for ch in "*?["):
            matched = [s for s in strategies if fnmatch.fnmatchcase(s.name, pattern)]
            if not matched:
                raise GbmiError(f"no strategy of task {task!r} matches {pattern!r}")
        else:
            matched = [registry.strategy(task, pattern)]
        for strategy in matched:
            if strategy.name not in seen:
                seen.add(strategy.name)
                chosen.append(strategy)
    return chosen


def _count(value: int) -> str:
    """An exact count, or 4 significant digits once it would take more than 12 (512^20 has 55)."""
    return str(value) if value < 10**12 else f"{value:.4g}"


def format_results(results, names=None) -> str:
    """The prove table; ``names`` maps strategy names to the names shown (e.g. their short names)."""
    names = names or {}
    rows = [[names.get(r.strategy, r.strategy), f"{r.accuracy_lower_bound:.4f}",
             f"{_count(r.correct_count)}/{_count(r.total_count)}", f"{r.flops:.3g}",
             "-" if r.unexplained_dimension is None else f"{r.unexplained_dimension:.4g}", f"{r.seconds:.2f}",
             "yes" if r.certified else "NO"]
            for r in results]
    return _table(rows, ["strategy", "bound", "correct/total", "FLOPs", "unexpl. dim", "seconds", "certified"],
                  right={1, 2, 3, 4, 5})


@main.command("check")
@click.argument("bundles", nargs=-1, required=True, type=_PathOrURL(exists=True))
@click.option("--independent", is_flag=True,
              help="Check with gbmi-check, the independent checker (numpy and FLINT only; shares no code with gbmi).")
@click.option("--match", "pattern", default=None, metavar="GLOB",
              help="From a store or archive, only the proofs whose name (bundles/TASK/MODEL/STRATEGY.gbmi-proof.npz) "
                   "matches GLOB, e.g. '*/cubic.*'.")
@click.pass_context
def check_cmd(ctx, bundles, independent, pattern):
    """Re-run verification (never search) of proof BUNDLES: files, folders of them, or stores.

    A store (a sweep.zip from `gbmi store export`, an s3:// URL, a store directory) is read in place: the
    bundles it holds, or else one bundle per stored result, rebuilt in memory from its model, certificate and
    result.  Prints agree or disagree per bundle; exits 1 if any disagrees.  With --independent, the bundles
    are checked by gbmi-check in a separate process instead (it must be installed).
    """
    import fnmatch
    import pathlib

    from .bundle import SUFFIX, check
    from .objectstore import is_url

    match = (lambda name: fnmatch.fnmatch(name, pattern)) if pattern else None
    sources = []  # (name, path or bytes)
    for given in bundles:
        as_path = pathlib.Path(given)
        if is_url(given) or (as_path.is_dir() and (as_path / "entries").is_dir()):
            sources += _store_bundles(ctx, given, match)
            continue
        if not as_path.exists():
            raise GbmiError(f"no such bundle, folder or store: {given}")
        found = sorted(as_path.glob(f"*{SUFFIX}")) if as_path.is_dir() else [as_path]
        if not found:
            raise GbmiError(f"no proof bundle (*{SUFFIX}) in {given}")
        sources += [(str(path), path) for path in found]
    unchecked = [(name, why) for name, why in sources if isinstance(why, _Unchecked)]
    for name, why in unchecked:  # results a store holds that no bundle could be made of
        click.echo(f"{name}: disagree: {why}")
    total, sources = len(sources), [(name, source) for name, source in sources if not isinstance(source, _Unchecked)]
    if independent:
        import re
        import shutil
        import subprocess
        import sys
        import tempfile

        if shutil.which("gbmi-check") is None and not _module_exists("gbmi_check"):
            raise GbmiError("--independent needs gbmi-check (pip install -e gbmi-check, or scripts/setup.sh)")
        with tempfile.TemporaryDirectory(prefix="gbmi-check-") as folder:
            paths = []
            for i, (name, source) in enumerate(sources):
                if isinstance(source, bytes):  # from a store: written out for the other process
                    safe = re.sub(r"[^A-Za-z0-9._+=-]", "_", name.rsplit("/", 1)[-1])[-120:]  # names come from strangers
                    path = pathlib.Path(folder) / f"{i:06d}-{safe}"
                    path.write_bytes(source)
                    source = path
                paths.append(str(source))
            code = subprocess.run([sys.executable, "-m", "gbmi_check", *paths]).returncode if paths else 0
            ctx.exit(code or (1 if unchecked else 0))
    registry = _registry(ctx)
    failures = len(unchecked)
    for name, source in sources:
        result = check(source, registry, name=name)
        failures += not result.agree
        click.echo(f"{name}: {result.message}")
    if failures:
        click.echo(f"{failures} of {total} bundles disagree", err=True)
        ctx.exit(1)


class _Unchecked(str):
    """Why a stored result could not be made into a bundle: reported as a disagreement (nothing unverified
    passes)."""


def _store_bundles(ctx, location, match) -> list:
    """The bundles a store holds, else one rebuilt per stored result (named, as bytes)."""
    from .export import archived_bundles, holds_bundles, stored_bundles
    from .store import Store

    store = Store(location)
    if not store.present():
        raise GbmiError(f"there is no store at {location}")
    if holds_bundles(store):  # an archive exported with --bundles: check those, as they are
        found = list(archived_bundles(store, match=match))
    else:
        found = [(f"{location}/{name}", data if data is not None else _Unchecked(why))
                 for name, data, why in stored_bundles(_registry(ctx), store, match=match)]
    if not found:
        raise GbmiError(f"the store at {location} holds no proof "
                        + ("that --match selects" if match else "(no bundles, no results)"))
    return found


def _module_exists(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


@main.command("prove")
@click.argument("task")
@_config_options
@click.option("--strategy", "patterns", multiple=True, default=("all",), show_default=True,
              help="A strategy name, a glob, or 'all'; repeatable.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option("--wide", is_flag=True, help="Show full strategy names (the default table uses short names to fit 120 columns).")
@click.option("--bundle", "bundle_dir", type=click.Path(file_okay=False), default=None,
              help="Also write one self-contained proof bundle per strategy into this folder (see `gbmi check`).")
@click.option("--model", "model_path", type=click.Path(dir_okay=False), default=None,
              help="Prove this model file (a TransformerLens 3.x or 4.x state_dict: .pt, .safetensors or .npz) instead of "
                   "training or loading one of ours.")
@_model_file_options
@click.pass_context
def prove_cmd(ctx, task, seed, preset, config_file, assignments, patterns, as_json, wide, bundle_dir, model_path,
              model_config, allow_pickle):
    """Prove lower bounds on the accuracy of TASK's model (loaded, or trained when absent), or of the model
    in a file (--model).

    Every bound a certified strategy reports holds in exact arithmetic: rounding is accounted for.
    """
    from .progress import progress as reporter

    registry = _registry(ctx)
    strategies = _select_strategies(registry, task, patterns)
    config = None if model_path else _make_config(registry, task, seed, preset, config_file, assignments)
    store = _store(ctx)
    architecture = None  # how to rebuild an imported model (for bundles)
    if model_path is not None:
        from . import lens
        from .imports import import_model

        if seed is not None or preset or config_file or assignments:
            raise GbmiError("--model proves the model in the file: drop --seed, --preset, --config and --set")
        model, _, _ = import_model(registry, task, model_path, store, config_path=model_config,
                                   allow_pickle=allow_pickle)
        spec = registry.task(task)
        config = spec.config_from_model(model) if spec.config_from_model else None
        architecture = lens.architecture(model)
    else:
        model, _ = registry.train_or_load(task, config, store)
    results, refused = [], 0
    bar = reporter(len(strategies), "proving", "strategy", enabled=len(strategies) > 1)
    for strategy in strategies:
        bar.set_postfix_str(strategy.name)
        try:
            results.append(strategy.prove(model, store))
        except TooLarge as error:
            if len(strategies) == 1:
                raise
            refused += 1
            click.echo(f"refused: {strategy.name}: {error}", err=True)  # the others still run
            continue
        finally:
            bar.update(1)
        if bundle_dir:  # the certificate prove just searched (or found) is in the store: no second search
            from .bundle import write_bundle

            certificate = strategy.search(model, model_hash=results[-1].model_hash, store=store)
            write_bundle(bundle_dir, strategy, model, config, certificate, results[-1], architecture=architecture)
    bar.close()
    if not results:  # a command that proved nothing does not succeed
        raise GbmiError(f"every one of the {refused} strategies was refused (see above); raise --max-memory or "
                        f"choose smaller work")
    results.sort(key=lambda r: (r.flops, r.strategy))
    if as_json:
        _echo_json([r.to_dict() for r in results])
    else:
        short = {} if wide else {s.name: s.spec.display_name for s in strategies}
        click.echo(format_results(results, short))
        if any(short.get(r.strategy, r.strategy) != r.strategy for r in results):
            click.echo("(short names; `gbmi list-strategies` or `--wide` gives the full ones)", err=True)


def _split_patterns(values) -> list[str]:
    return [p.strip() for v in values for p in v.split(",") if p.strip()]


@main.command("sweep")
@click.argument("task")
@click.option("--seeds", default="0:16", show_default=True, help="Seeds: START:STOP, a comma list, or both.")
@click.option("--strategies", "patterns", multiple=True, default=("all",), show_default=True,
              help="Names, globs, comma lists, or 'all'; repeatable.")
@click.option("--preset", default=None, help="A named preset of the task.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="A .json or .toml config file.")
@click.option("--set", "assignments", multiple=True, metavar="FIELD=VALUE", help="Override a config field.")
@click.option("--jobs", type=click.IntRange(min=1), default=None,
              help="Local worker processes (default: one per CPU; 1 runs in this process).")
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Start a Dask LocalCluster with N workers.")
@click.option("--scheduler", default=None, metavar="tcp://HOST:PORT", help="Send the work to an existing Dask cluster.")
@click.option("--models", "model_globs", multiple=True, metavar="GLOB",
              help="Prove these model files (imported first; see `gbmi import-model`) instead of seeds; repeatable.")
@_model_file_options
@click.pass_context
def sweep_cmd(ctx, task, seeds, patterns, preset, config_file, assignments, jobs, workers, scheduler, model_globs,
              model_config, allow_pickle):
    """Train-or-load TASK's model for every seed and run every chosen strategy, storing each result.

    Resumable: results already in the store are skipped, so a killed sweep is simply run again.
    """
    from .config import parse_assignment
    from .sweep import parse_seeds, run_sweep

    registry = _registry(ctx)
    strategies = [s.name for s in _select_strategies(registry, task, _split_patterns(patterns))]
    overrides = dict(parse_assignment(a) for a in assignments)
    model_keys, unsuitable, files = [], [], []
    if model_globs:
        import glob

        from .imports import import_model

        files = sorted({path for pattern in model_globs for path in glob.glob(pattern)})
        if not files:
            raise GbmiError(f"no model file matches {', '.join(model_globs)}")
        for path in files:
            try:
                model_keys.append(import_model(registry, task, path, _store(ctx), config_path=model_config,
                                               allow_pickle=allow_pickle)[1])
            except GbmiError as error:  # a file that is not a model of the task: name it, prove the rest
                unsuitable.append((path, str(error)))
        for path, why in unsuitable:
            click.echo(f"  skipped model file {path}: {why}", err=True)
        if not model_keys:
            raise GbmiError(f"none of the {len(files)} model files could be used (each is named above)")
        model_keys = list(dict.fromkeys(model_keys))  # two files with the same weights are one model
        configs = []
    else:
        configs = [registry.make_config(task, preset=preset, config_file=config_file,
                                        overrides={**overrides, "seed": seed}) for seed in parse_seeds(seeds)]
    if workers and scheduler:
        raise GbmiError("give --workers (start a local Dask cluster) or --scheduler (use one), not both")
    executor = "dask" if (workers or scheduler) else "processes"
    store = _store(ctx)
    summary = run_sweep(registry, task, configs, strategies, store, executor=executor, jobs=jobs,
                        scheduler=scheduler, workers=workers, model_keys=model_keys)
    refused = f", {len(summary.refused)} refused as too large" if summary.refused else ""
    click.echo(f"{summary.models} models, {summary.pairs} (model, strategy) pairs: {summary.done} proved now, "
               f"{summary.skipped} already stored{refused}, {len(summary.failed)} failed; {summary.seconds:.1f} s; "
               f"store {store.root}")
    for reason in sorted({(strategy, error) for _, strategy, error in summary.refused})[:20]:
        click.echo(f"  refused: {reason[0]}: {reason[1]}", err=True)
    for config_hash, strategy, error in summary.failed[:20]:
        click.echo(f"  failed: config {config_hash} {strategy}: {error}", err=True)
    if model_globs and unsuitable:
        click.echo(f"{len(unsuitable)} of {len(files)} model files skipped (named above)", err=True)
    if summary.failed or (model_globs and unsuitable):
        ctx.exit(1)


@main.command("report")
@click.argument("task")
@click.option("--preset", "presets", multiple=True,
              help="Report on this preset's models (repeatable; 'all' for every preset with results; default: the "
                   "task's default config).  Several presets add a comparison table and a preset column.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="A .json or .toml config file.")
@click.option("--set", "assignments", multiple=True, metavar="FIELD=VALUE", help="Override a config field.")
@click.option("--format", "fmt", type=click.Choice(["table", "markdown", "csv", "latex", "json"]), default="table",
              show_default=True)
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None,
              help="Also write plots: PATH's suffix (.png or .svg) picks the format; three files, PATH-<name>.")
@click.option("--wide", is_flag=True, help="Full strategy names, with family and complexity columns (lines may be "
                                          "long; the default table fits 120 columns).")
@click.pass_context
def report_cmd(ctx, task, presets, config_file, assignments, fmt, plot_path, wide):
    """Summarise the results the store holds for TASK across seeds (Table 1 of the paper), and plot them."""
    from .config import parse_assignment
    from .report import collect, plot, render, render_presets, summarise

    registry = _registry(ctx)
    overrides = dict(parse_assignment(a) for a in assignments)
    names = list(presets) or [None]
    if "all" in names:
        names = list(registry.task(task).presets)
    store = _store(ctx)
    sections = []
    for name in names:
        config = registry.make_config(task, preset=name, config_file=config_file, overrides=overrides)
        rows = collect(registry, task, store, config)
        if rows:
            sections.append((name, rows, summarise(rows)))
    if not sections:
        raise GbmiError(f"the store at {store.root} holds no results for task {task!r} with this config; "
                        f"run `gbmi sweep {task}` first")
    # the terminal table: short names, no family or complexity columns, so that it fits 120 columns
    short = None if wide else {s.name: s.spec.display_name for s in registry.strategies(task)}
    if len(names) == 1:
        click.echo(render(sections[0][2], fmt, short))
    else:
        click.echo(render_presets([(name, summary) for name, _, summary in sections], fmt, short))
    if plot_path:
        import pathlib

        for name, rows, summary in sections:
            target = pathlib.Path(plot_path)
            if len(names) > 1:
                target = target.with_name(f"{target.stem}-{name}{target.suffix}")
            for path in plot(rows, summary, target, title=f"{task}{'' if name is None else ' ' + name}: "):
                click.echo(f"wrote {path}", err=True)


@main.command("import-model")
@click.argument("task")
@click.argument("path", type=click.Path(dir_okay=False))
@_model_file_options
@click.pass_context
def import_model_cmd(ctx, task, path, model_config, allow_pickle):
    """Check a model file against TASK and add it to the store (under its weights' hash)."""
    from .imports import import_model

    registry = _registry(ctx)
    store = _store(ctx)
    _, key, digest = import_model(registry, task, path, store, config_path=model_config, allow_pickle=allow_pickle)
    click.echo(f"task {task}  model {digest}  key {key}  store {store.root}")


@main.command("explain")
@click.argument("task")
@_config_options
@click.option("--model", "model_path", type=click.Path(dir_okay=False), default=None,
              help="Draw this model file instead of training or loading one of ours.")
@_model_file_options
@click.option("--strategy", default=None, help="Also draw the figures about this strategy's proof.")
@click.option("--figure", "names", multiple=True, help="Only this figure (repeatable; default: all).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True, help="Folder for the figures.")
@click.option("--format", "fmt", type=click.Choice(["png", "svg", "pdf"]), default="png", show_default=True)
@click.pass_context
def explain_cmd(ctx, task, seed, preset, config_file, assignments, model_path, model_config, allow_pickle,
                strategy, names, out_dir, fmt):
    """Draw the pictures of TASK's mechanism for a model (the figures its plugins provide) into --out."""
    import pathlib

    registry = _registry(ctx)
    store = _store(ctx)
    if model_path is not None:
        from .imports import import_model

        model = import_model(registry, task, model_path, store, config_path=model_config, allow_pickle=allow_pickle)[0]
        label = f"file {model_path}"
    else:
        config = _make_config(registry, task, seed, preset, config_file, assignments)
        model, _ = registry.train_or_load(task, config, store)
        label = f"seed {config.seed}" if hasattr(config, "seed") else None
    if not registry.figures(task):
        raise GbmiError(f"no plugin draws figures for task {task!r}")
    not_applicable: dict[str, str] = {}
    figures = registry.explain(task, model, strategy=strategy, names=names or None, skipped=not_applicable,
                               label=label)
    for name, why in not_applicable.items():
        click.echo(f"skipped figure {name}: {why}", err=True)
    if not figures:
        raise GbmiError("no figure applies: " + "; ".join(not_applicable.values()) if not_applicable
                        else "no figure was drawn")
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, figure in figures.items():
        path = out / f"{name}.{fmt}"
        figure.savefig(path, dpi=110)
        click.echo(str(path))
    skipped = [f.name for f in registry.figures(task) if f.needs_strategy and f.name not in figures]
    if skipped and strategy is None:
        click.echo(f"(figures about a proof need --strategy: {', '.join(skipped)})", err=True)


@main.command("results")
@click.argument("task")
@click.option("--preset", default=None, help="Only models of this preset's config (any seed).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="Only models of this config (any seed).")
@click.option("--set", "assignments", multiple=True, metavar="FIELD=VALUE",
              help="Only models of the default config with this field changed (any seed); repeatable.")
@click.option("--model-hash", default=None, help="Only this model (a prefix of its hash is enough).")
@click.option("--format", "fmt", type=click.Choice(["csv", "json", "parquet"]), default="csv", show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False), default=None,
              help="Write here instead of standard output (required for parquet).")
@click.pass_context
def results_cmd(ctx, task, preset, config_file, assignments, model_hash, fmt, output):
    """Every stored result of TASK as one table: a row per (model, strategy), with its config, hashes,
    bound, counts, FLOPs, unexplained dimension, seconds and certified flag (pandas reads it as is)."""
    from .config import parse_assignment
    from .results import result_rows, to_frame, write

    registry = _registry(ctx)
    config = None
    if preset or config_file or assignments:
        overrides = dict(parse_assignment(a) for a in assignments)
        config = registry.make_config(task, preset=preset, config_file=config_file, overrides=overrides)
    if fmt == "parquet" and output is None:
        raise GbmiError("parquet is binary: give --output PATH")
    store = _store(ctx)
    rows = result_rows(registry, task, store, config=config, model_hash=model_hash)
    if not rows:
        raise GbmiError(f"the store at {store.root} holds no results for task {task!r} matching this selection")
    data = write(to_frame(rows), fmt, output)
    if output is None:
        click.echo(data, nl=False)
    else:
        click.echo(f"wrote {len(rows)} rows to {output}", err=True)


@main.group("store")
def store_group():
    """Inspect or tidy the store (see `gbmi --store DIR store info`)."""


@store_group.command("info")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def store_info_cmd(ctx, as_json):
    """What the store holds: entries by kind, files and bytes on disk, garbage and set-aside entries."""
    from .memory import format_size

    store = _store(ctx)
    if not store.present():
        raise GbmiError(f"there is no store at {store.root}")
    info = store.info()
    if as_json:
        _echo_json(info)
        return
    kinds = ", ".join(f"{count} {kind}" for kind, count in info["by_kind"].items()) or "nothing"
    click.echo(f"store {info['root']}\n"
               f"  entries: {info['entries']} ({kinds}); {info['packed_entries']} packed, {info['zarr_entries']} Zarr groups\n"
               f"  on disk: {info['files']} files, {format_size(info['bytes_on_disk'])}\n"
               f"  garbage: {info['unreferenced_objects']} unreferenced objects, {info['temporary_files']} temporary "
               f"files (`gbmi store gc` removes them)\n"
               f"  set aside as corrupt: {info['set_aside']} (in {info['root']}/.corrupt)")


@store_group.command("gc")
@click.option("--older-than", "older_than", type=click.FloatRange(min=0), default=3600.0, show_default=True,
              metavar="SECONDS", help="Only remove garbage at least this old (a live writer may own younger files).")
@click.option("--corrupt", "drop_corrupt", is_flag=True, help="Also delete the entries set aside as corrupt.")
@click.option("--delete", "prefixes", multiple=True, metavar="PREFIX",
              help="Also delete every entry under PREFIX (e.g. results/max-of-k, or certificates); repeatable.")
@click.pass_context
def store_gc_cmd(ctx, older_than, drop_corrupt, prefixes):
    """Remove what no entry refers to (left by killed or losing writers), and optionally prune entries."""
    store = _store(ctx)
    if not store.present():
        raise GbmiError(f"there is no store at {store.root}")
    if store.read_only:
        raise GbmiError(f"the store at {store.root} is read-only (an archive): there is nothing to tidy")
    deleted = 0
    for prefix in prefixes:
        for key in list(store.keys(prefix.strip("/"))):
            deleted += store.delete(key)
    removed = store.collect_garbage(older_than_s=older_than)
    dropped = store.drop_set_aside() if drop_corrupt else 0
    click.echo(f"deleted {deleted} entries, removed {removed} unreferenced objects or temporary files, "
               f"dropped {dropped} set-aside entries")


@store_group.command("export")
@click.argument("source", required=False, metavar="[DIR_OR_URL]")
@click.option("--to", "target", required=True, type=click.Path(dir_okay=False), metavar="ARCHIVE.zip",
              help="The archive to write (replaced whole if it exists).")
@click.option("--bundles", is_flag=True, help="Also add one proof bundle per result (checkable alone, by gbmi-check).")
@click.option("--cache", "with_cache", is_flag=True, help="Also export cache/ (intermediate tensors; recomputable).")
@click.pass_context
def store_export_cmd(ctx, source, target, bundles, with_cache):
    """Write the models, certificates and results of a store (default: --store) into one zip archive, itself a
    read-only store: `gbmi --store ARCHIVE.zip report TASK`, `gbmi check ARCHIVE.zip`."""
    from .export import EXPORTED, export_store
    from .memory import format_size
    from .store import Store

    store = Store(source) if source else _store(ctx)
    counts = export_store(store, target, registry=_registry(ctx) if bundles else None, bundles=bundles,
                          kinds=EXPORTED + (("cache",) if with_cache else ()), progress=True)
    click.echo(f"wrote {target}: {counts['entries']} entries"
               + (f", {counts['bundles']} bundles" if bundles else "")
               + f", {format_size(counts['bytes'])}")
    if counts["unreadable"]:
        click.echo(f"{counts['unreadable']} corrupt entries were left out (set aside in the source)", err=True)
    if counts["bundles_skipped"]:
        click.echo(f"{counts['bundles_skipped']} results had no bundle (missing certificate, model or plugin)",
                   err=True)


if __name__ == "__main__":  # pragma: no cover
    main()
