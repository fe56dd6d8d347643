"""Reports over what a store holds: a Table-1-style summary and plots.

The report joins each stored model (its config, hence its seed) with the results stored for its weights'
hash.  Models are selected by config: every field but ``seed`` must match the requested config (the
task's default, a preset, or overrides), so one report covers one model size across seeds.

Bounds are normalised by the task's exact reference strategy (``TaskSpec.reference_strategy``, e.g.
brute force) on the same seed: ``normalised bound = bound / exact accuracy``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import pathlib
import statistics
from typing import Any

import attrs

from . import config as config_mod
from .records import ProofResult


@attrs.frozen
class Row:
    seed: int | None
    config_hash: str
    result: ProofResult
    family: str
    complexity: str
    normalised: float | None


def config_filter(config):
    """A test of stored configs (dicts): equal to ``config`` in every field but ``seed``."""
    wanted = json.loads(json.dumps(config_mod.unstructure(config)))  # as stored: tuples become lists
    wanted.pop("seed", None)

    def same_but_seed(stored) -> bool:
        return {k: v for k, v in dict(stored).items() if k != "seed"} == wanted

    return same_but_seed


def collect(registry, task: str, store, config) -> list[Row]:
    """Every stored result for models whose config equals ``config`` except for the seed."""
    spec = registry.task(task)
    same_but_seed = config_filter(config)
    known = {s.name: s for s in registry.strategies(task)}
    rows: list[Row] = []
    for key in store.keys(f"models/{task}"):
        attributes = store.attrs(key)  # the weights are not needed here
        if attributes is None or attributes.get("imported"):  # imported models: `gbmi results` lists them
            continue
        if not same_but_seed(attributes.get("config", {})):
            continue
        seed = attributes.get("config", {}).get("seed")
        model_hash = attributes["model_hash"]
        results = {}
        for stored in store.get_many(list(store.keys(f"results/{task}/{model_hash}"))).values():
            if stored is not None:
                result = ProofResult.from_dict(stored.attrs)
                results[result.strategy] = result
        exact = results.get(spec.reference_strategy) if spec.reference_strategy else None
        for name, result in sorted(results.items()):
            strategy = known.get(name)
            normalised = (result.accuracy_lower_bound / exact.accuracy_lower_bound
                          if exact is not None and exact.accuracy_lower_bound > 0 else None)
            rows.append(Row(seed, attributes.get("config_hash", key.rsplit("/", 1)[-1]), result,
                            strategy.spec.family if strategy else "(unregistered)",
                            strategy.complexity if strategy else "?", normalised))
    return rows


def _count(values) -> int:
    return sum(1 for v in values if v is not None and not math.isnan(v))


def _mean_std(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarise(rows: list[Row]) -> dict[str, list[dict[str, Any]]]:
    """Per-strategy and per-family summaries (family: the best strategy of the family on each seed)."""
    by_strategy: dict[str, list[Row]] = {}
    for row in rows:
        by_strategy.setdefault(row.result.strategy, []).append(row)
    strategies = []
    for name, group in sorted(by_strategy.items()):
        bound = _mean_std([r.result.accuracy_lower_bound for r in group])
        norm = _mean_std([r.normalised for r in group])
        strategies.append({
            "strategy": name, "family": group[0].family, "complexity": group[0].complexity, "seeds": len(group),
            "bound_mean": bound[0], "bound_std": bound[1], "normalised_mean": norm[0], "normalised_std": norm[1],
            "normalised_seeds": _count(r.normalised for r in group),
            "flops_mean": statistics.fmean(r.result.flops for r in group),
            "unexplained_dimension": statistics.fmean(r.result.unexplained_dimension or 0 for r in group),
            "seconds_mean": statistics.fmean(r.result.seconds for r in group),
        })
    by_family: dict[str, dict[Any, Row]] = {}
    for row in rows:
        best = by_family.setdefault(row.family, {})
        current = best.get(row.seed)
        if current is None or row.result.accuracy_lower_bound > current.result.accuracy_lower_bound:
            best[row.seed] = row
    families = []
    for family, best in sorted(by_family.items()):
        group = list(best.values())
        bound = _mean_std([r.result.accuracy_lower_bound for r in group])
        norm = _mean_std([r.normalised for r in group])
        families.append({
            "family": family, "strategies": len({r.result.strategy for r in rows if r.family == family}),
            "seeds": len(group), "best_bound_mean": bound[0], "best_bound_std": bound[1],
            "best_normalised_mean": norm[0], "best_normalised_std": norm[1],
            "normalised_seeds": _count(r.normalised for r in group),
            "flops_of_best_mean": statistics.fmean(r.result.flops for r in group),
            "unexplained_dimension_of_best": statistics.fmean(r.result.unexplained_dimension or 0 for r in group),
        })
    return {"strategies": strategies, "families": families}


#: Terminal tables fit this many columns by default.
TABLE_WIDTH = 120


def format_table(rows: list[list[str]], headers: list[str], right=frozenset(), width: int | None = TABLE_WIDTH) -> str:
    """A plain-text table: a header, a rule, then rows; columns in ``right`` are right-aligned.  Lines fit
    ``width`` columns: the last column (free text) is cut with an ellipsis where it would not fit."""
    rows = [[str(c) for c in row] for row in rows]
    widths = [max(len(str(x)) for x in column) for column in zip(headers, *rows)]
    if width is not None and widths and sum(widths) + 2 * (len(widths) - 1) > width:
        room = width - sum(widths[:-1]) - 2 * (len(widths) - 1)
        if room >= max(12, len(headers[-1])):
            widths[-1] = room
            rows = [row[:-1] + [row[-1] if len(row[-1]) <= room else row[-1][: room - 1] + "…"] for row in rows]

    def fmt(row):
        cells = [str(c).rjust(w) if i in right else str(c).ljust(w) for i, (c, w) in enumerate(zip(row, widths))]
        return "  ".join(cells).rstrip()

    return "\n".join([fmt(headers), "  ".join("-" * w for w in widths), *(fmt(row) for row in rows)])


def _pm(mean: float, std: float, digits: int = 4, n: int | None = None, of: int | None = None) -> str:
    """``mean ± std``; with ``n`` values of ``of`` seeds where they differ, says ``(n=k of N)``, and one
    value is shown without a spread it does not have."""
    if math.isnan(mean):
        return "-"
    text = f"{mean:.{digits}f}" if n == 1 else f"{mean:.{digits}f} ± {std:.{digits}f}"
    return text if n is None or n == of else f"{text} (n={n} of {of})"


def _norm(entry: dict, prefix: str = "") -> str:
    return _pm(entry[f"{prefix}normalised_mean"], entry[f"{prefix}normalised_std"],
               n=entry.get("normalised_seeds"), of=entry["seeds"])


def _footnote(summary) -> str | None:
    """A line saying that normalised bounds cover fewer seeds than the bounds, when they do."""
    short = [s for s in summary["strategies"] if s.get("normalised_seeds", s["seeds"]) < s["seeds"]]
    if not short:
        return None
    have = max(s.get("normalised_seeds", 0) for s in summary["strategies"])
    most = max(s["seeds"] for s in summary["strategies"])
    return (f"note: normalised bounds divide by the exact accuracy, known for {have} of {most} seeds; prove the "
            f"task's exact strategy (e.g. brute force) on the others to normalise them too")


def _tables(summary, names=None) -> list[tuple[str, list[str], list[list[str]]]]:
    """The family and strategy tables; with ``names`` (the terminal table's short names) the strategy table
    leaves out the family and complexity columns, to fit 120 columns."""
    fam_headers = ["family", "members", "seeds", "best bound", "best normalised", "FLOPs (best)", "unexpl. dim"]
    fam_rows = [[f["family"], str(f["strategies"]), str(f["seeds"]), _pm(f["best_bound_mean"], f["best_bound_std"]),
                 _norm(f, "best_"), f"{f['flops_of_best_mean']:.3g}",
                 f"{f['unexplained_dimension_of_best']:.4g}"] for f in summary["families"]]
    headers = ["strategy", "family", "complexity", "seeds", "bound", "normalised", "FLOPs", "unexpl. dim"]
    rows = [[(names or {}).get(s["strategy"], s["strategy"]), s["family"], s["complexity"], str(s["seeds"]),
             _pm(s["bound_mean"], s["bound_std"]), _norm(s), f"{s['flops_mean']:.3g}",
             f"{s['unexplained_dimension']:.4g}"] for s in summary["strategies"]]
    if names is not None:
        headers = [h for i, h in enumerate(headers) if i not in (1, 2)]
        rows = [[c for i, c in enumerate(row) if i not in (1, 2)] for row in rows]
    return [("Per family (the best strategy of the family on each seed)", fam_headers, fam_rows),
            ("Per strategy", headers, rows)]


def _emit(title: str, headers: list[str], rows: list[list[str]], fmt: str) -> str:
    """One titled table as a terminal ``table``, ``markdown`` or ``latex``."""
    if fmt == "markdown":
        lines = [f"### {title}", "", "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])
    if fmt == "latex":
        def tex(text):
            return (text.replace("\\", "\\textbackslash{}").replace("_", "\\_").replace("&", "\\&")
                    .replace("%", "\\%").replace("#", "\\#").replace("^", "\\^{}").replace("±", "$\\pm$"))

        lines = [f"% {title}", "\\begin{tabular}{" + "l" * len(headers) + "}", "\\hline",
                 " & ".join(tex(h) for h in headers) + " \\\\", "\\hline"]
        lines += [" & ".join(tex(c) for c in row) + " \\\\" for row in rows]
        return "\n".join(lines + ["\\hline", "\\end{tabular}"])
    if fmt == "table":
        return f"{title}\n{format_table(rows, headers)}"
    raise ValueError(f"unknown format {fmt!r}")


#: The columns of ``--format csv``: one row per family (its best strategy on each seed) and per strategy.
CSV_COLUMNS = ["preset", "level", "name", "family", "complexity", "strategies", "seeds", "bound_mean", "bound_std",
               "normalised_mean", "normalised_std", "normalised_seeds", "flops_mean", "unexplained_dimension",
               "seconds_mean"]


def _csv(sections) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, CSV_COLUMNS, lineterminator="\n", restval="")
    writer.writeheader()
    for preset, summary in sections:
        for f in summary["families"]:
            writer.writerow({"preset": preset or "", "level": "family", "name": f["family"], "family": f["family"],
                             "strategies": f["strategies"], "seeds": f["seeds"], "bound_mean": f["best_bound_mean"],
                             "bound_std": f["best_bound_std"], "normalised_mean": f["best_normalised_mean"],
                             "normalised_std": f["best_normalised_std"], "normalised_seeds": f["normalised_seeds"],
                             "flops_mean": f["flops_of_best_mean"],
                             "unexplained_dimension": f["unexplained_dimension_of_best"]})
        for r in summary["strategies"]:
            writer.writerow({"preset": preset or "", "level": "strategy", "name": r["strategy"], "family": r["family"],
                             "complexity": r["complexity"], "strategies": 1, "seeds": r["seeds"],
                             **{k: r[k] for k in ("bound_mean", "bound_std", "normalised_mean", "normalised_std",
                                                  "normalised_seeds", "flops_mean", "unexplained_dimension",
                                                  "seconds_mean")}})
    return buffer.getvalue().rstrip("\n")


def render(summary, fmt: str = "table", names=None) -> str:
    """The summary as ``table`` (terminal), ``markdown``, ``csv`` (one table), ``latex`` or ``json``.

    ``names`` maps strategy names to the names the terminal table shows (e.g. short names)."""
    return render_presets([(None, summary)], fmt, names)


def render_presets(sections: list[tuple[str | None, dict]], fmt: str = "table", names=None) -> str:
    """Summaries of several presets (``[(preset, summary)]``): with more than one, a comparison of each
    family's best bound across presets comes first, then each preset's tables; ``csv`` and ``json`` carry
    the preset in every row (resp. as the top-level key)."""
    if fmt == "json":
        data = sections[0][1] if len(sections) == 1 else {name: summary for name, summary in sections}
        return json.dumps(data, indent=2, sort_keys=True, allow_nan=True)
    if fmt == "csv":
        return _csv(sections)
    out = []
    if len(sections) > 1:
        headers = ["preset", "family", "seeds", "best bound", "best normalised", "FLOPs (best)"]
        rows = [[name, f["family"], str(f["seeds"]), _pm(f["best_bound_mean"], f["best_bound_std"]),
                 _norm(f, "best_"), f"{f['flops_of_best_mean']:.3g}"]
                for name, summary in sections for f in summary["families"]]
        out.append(_emit("Per preset (the best strategy of each family on each seed)", headers, rows, fmt))
    for name, summary in sections:
        for title, headers, rows in _tables(summary, names if fmt == "table" else None):
            out.append(_emit(title if name is None else f"{name}: {title}", headers, rows, fmt))
        note = _footnote(summary)
        if note:
            import textwrap

            out.append({"markdown": f"_{note}_", "latex": f"% {note}"}.get(fmt, textwrap.fill(note, TABLE_WIDTH)))
    return "\n\n".join(out)


def pareto_frontier(points: list[tuple[float, float, Any]]) -> list[tuple[float, float, Any]]:
    """Points ``(cost, value, label)`` not beaten by another with strictly lower cost *and* higher value."""
    frontier = [p for p in points if not any(o[0] < p[0] and o[1] > p[1] for o in points)]
    return sorted(frontier, key=lambda p: (p[0], -p[1]))


def plot(rows: list[Row], summary, path: str | pathlib.Path, title: str = "") -> list[pathlib.Path]:
    """Write the three report plots next to ``path`` (its suffix, .png or .svg, picks the format)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = pathlib.Path(path)
    suffix = path.suffix.lower() or ".png"
    if suffix not in {".png", ".svg"}:
        from .errors import GbmiError

        raise GbmiError(f"plots are written as .png or .svg, not {suffix!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    families = sorted({r.family for r in rows})
    colours = {f: plt.get_cmap("tab10")(i % 10) for i, f in enumerate(families)}
    written = []

    def save(fig, name):
        target = path.with_name(f"{path.stem}-{name}{suffix}")
        fig.tight_layout()
        fig.savefig(target, dpi=120)
        plt.close(fig)
        written.append(target)

    normalised = any(r.normalised is not None for r in rows)

    def scatter(x, y, xlabel, ylabel, what, name, extra=None):
        """One dot per (seed, strategy), coloured by family; log-scale x."""
        fig, ax = plt.subplots(figsize=(8, 5.5))
        seeds = len({r.seed for r in rows if x(r) and y(r) is not None})  # the seeds this plot shows
        for family in families:
            group = [r for r in rows if r.family == family and x(r) and y(r) is not None]
            ax.scatter([x(r) for r in group], [y(r) for r in group], s=12, alpha=0.6, color=colours[family],
                       label=family)
        if extra:
            extra(ax)
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        # two lines, so long task and preset names stay inside the figure
        ax.set_title(f"{title}{what}\n({seeds} seed{'s' if seeds != 1 else ''}; a dot per seed and strategy)",
                     fontsize=11)
        ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize=8, loc="lower right")
        ax.grid(alpha=0.3)
        save(fig, name)

    def frontier(ax):
        means = [(s["flops_mean"], s["normalised_mean"] if normalised else s["bound_mean"], s["strategy"])
                 for s in summary["strategies"]]
        points = pareto_frontier(means)
        ax.plot([p[0] for p in points], [p[1] for p in points], "k--", lw=1, marker="o", mfc="none",
                label="Pareto frontier (strategy means)")

    # 1. normalised bound vs proof length, with the Pareto frontier of per-strategy means
    scatter(lambda r: r.result.flops, (lambda r: r.normalised) if normalised else (lambda r: r.result.accuracy_lower_bound),
            "proof length (FLOPs of verification, log scale)",
            "accuracy bound / true accuracy" if normalised else "accuracy lower bound",
            "normalised bound vs proof length" if normalised else "bound vs proof length", "bound-vs-flops", frontier)
    # 2. bound vs unexplained dimension
    scatter(lambda r: r.result.unexplained_dimension, lambda r: r.result.accuracy_lower_bound,
            "unexplained dimension (parameters the proof treats as a black box, log scale)",
            "accuracy lower bound", "bound vs unexplained dimension", "bound-vs-dimension")

    # 3. per-seed spread of each family's best bound
    fig, ax = plt.subplots(figsize=(8, 5.5))
    best: dict[str, dict[Any, float]] = {}
    for r in rows:
        family_best = best.setdefault(r.family, {})
        family_best[r.seed] = max(family_best.get(r.seed, -1.0), r.result.accuracy_lower_bound)
    data = [list(best[f].values()) for f in families]
    ax.boxplot(data, showmeans=True)
    for i, values in enumerate(data, start=1):
        ax.scatter([i] * len(values), values, s=10, alpha=0.5, color=colours[families[i - 1]])
    ax.set_xticks(range(1, len(families) + 1), families, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("best accuracy lower bound in the family, per seed")
    ax.set_title(f"{title}spread over seeds of each family's best bound")
    ax.text(0.01, 0.01, "box: quartiles; line: median; triangle: mean; dots: seeds", transform=ax.transAxes,
            fontsize=8, va="bottom")
    ax.grid(alpha=0.3, axis="y")
    save(fig, "family-spread")
    return written
