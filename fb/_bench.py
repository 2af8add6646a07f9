"""``fb bench``: fb against raw files, zict, diskcache and the machine's physical limits.

Two workloads, each with an in-memory budget of 25% of its data: *small* (2000 x 64 KiB
``bytes``) and *large* (200 x 4 MiB float64 numpy arrays). Each runs three timed phases: N
inserts, N uniform random reads, N Zipf reads (s = 1.1 over a random permutation of the keys).
Every read checks the value it got: its length (shape and dtype for arrays), its first 8
bytes or element (the item's index) and its last ones (content at the item's own offset).

The systems run in the same process and directory tree, interleaved (A B C A B C ...):

- ``fb``: `FBPool` (``max_bytes`` = budget) over `FBStore` with the pickle codec;
- ``raw-wt``: one ``pickle.dump`` file per key written on insert, behind an OrderedDict LRU
  front of the same byte budget; every ratio is taken against it;
- ``zict``: ``Buffer(dict, Func(pickle.dumps, pickle.loads, File(dir)), n=budget)``;
- ``diskcache``: a ``diskcache.Cache`` written through on insert, behind a cachetools
  ``LRUCache(getsizeof=nbytes)``;
- ``physical``: one file written sequentially (with and without fsync), read back warm,
  and memcpy: what the machine can do at best.

Then the hit path (ns per resident load) and fb's scaling with the number of items.

The machine may be a noisy VM: each timed phase is preceded by a garbage collection and by
faulting in (then freeing) as much fresh memory as the phase will need, because freed memory
may be handed back to the host and cost ~1 GiB/s to touch again. Every system-run writes to
a fresh directory and nothing is deleted until the end, because on some filesystems (ext4
with online discard) a create after many deletions is slow.
"""

from __future__ import annotations

import importlib.util
import json
import operator
import os
import platform
import shutil
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import click

from . import __version__
from ._bench_systems import (
    FACTORIES,
    KIB,
    MB,
    MIB,
    QUICK,
    WORKLOADS,
    Workload,
    _orders,
    _System,
    _Values,
    fb_factory,
)
from ._bench_timing import (
    SCALE_LOADS,
    SPILL_RESIDENT,
    TRACE_MAX_ITEMS,
    _hit_path,
    _run_physical,
    _run_system,
    _scale_one,
)
from ._pool import WRITE_MODES, WriteMode

__all__ = ["bench"]

PEERS = ("numpy", "zict", "diskcache", "cachetools")
INSTALL = "pip install 'file-backed[bench]'"
SYSTEMS = ("fb", "fb-diskcache", "raw-wt", "zict", "diskcache")
REFERENCE = "raw-wt"
PHASES = ("insert", "uniform", "zipf")
PHYSICAL = ("write", "write_fsync", "read_warm", "memcpy")
LABELS = {
    "insert": "insert",
    "uniform": "uniform reads",
    "zipf": "zipf reads",
    "write": "one-file write",
    "write_fsync": "one-file write+fsync",
    "read_warm": "one-file warm read",
    "memcpy": "memcpy",
}
INSERT_CEILING_GOAL = 0.70
TOTAL_GOAL = 1.3
"""Each workload's three phases together: fb at least 1.3x raw-wt."""
HIT_GOAL_PURE = 2.5
"""The hit path in pure Python: at most 2.5x cachetools (1.0x stays the compass)."""


class _MissingPeerError(click.ClickException):
    exit_code = 2


# -- summaries -----------------------------------------------------------------------------


def _summary(
    runs: list[tuple[float, float | None]], workload: Workload, reference: list[float] | None
) -> Any:
    seconds = [one for one, _ in runs]
    misses = [miss for _, miss in runs if miss is not None]
    median = statistics.median(seconds)
    summary: dict[str, Any] = {
        "seconds": seconds,
        "median_s": median,
        "mb_s": workload.total_bytes / MB / median,
        "ops_s": workload.count / median,
        "spread": (max(seconds) - min(seconds)) / median,
        "miss_ratio": statistics.median(misses) if misses else None,
        "ratio_vs_raw_wt": None,
    }
    if reference is not None:
        # Per run, then the median: drift of a noisy machine hits both sides of a ratio.
        ratios = [ref / own for ref, own in zip(reference, seconds, strict=True)]
        summary["ratio_vs_raw_wt"] = statistics.median(ratios)
    return summary


def _target(name: str, value: float, goal: float, *, at_least: bool) -> dict[str, Any]:
    met = value >= goal if at_least else value <= goal
    sign = ">=" if at_least else "<="
    return {"target": name, "value": value, "goal": f"{sign} {goal:.2f}", "met": met}


def _targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    targets = []
    for name, workload in report["workloads"].items():
        fb = workload["systems"]["fb"]
        for phase in PHASES:
            ratio = fb[phase]["ratio_vs_raw_wt"]
            targets.append(_target(f"{name} {phase}: fb vs raw-wt", ratio, 1.0, at_least=True))
        # The three phases together, per run: raw-wt's total time over fb's.
        totals = zip(
            *(workload["systems"]["raw-wt"][phase]["seconds"] for phase in PHASES), strict=True
        )
        own = zip(*(fb[phase]["seconds"] for phase in PHASES), strict=True)
        total = statistics.median(
            sum(ref) / sum(mine) for ref, mine in zip(totals, own, strict=True)
        )
        label = f"{name} three phases: fb vs raw-wt"
        targets.append(_target(label, total, TOTAL_GOAL, at_least=True))
        if name == "large":
            write_s = workload["systems"]["physical"]["write"]["seconds"]
            pairs = zip(write_s, fb["insert"]["seconds"], strict=True)
            share = statistics.median(write / own for write, own in pairs)
            label = "large insert: fb / one-file page-cache write"
            targets.append(_target(label, share, INSERT_CEILING_GOAL, at_least=True))
    hits = report["hit_path"]
    pairs = zip(hits["fb"]["ns"], hits["cachetools"]["ns"], strict=True)
    ratio = statistics.median(own / other for own, other in pairs)
    label = "hit path: fb load / cachetools LRUCache.__getitem__"
    targets.append(_target(f"{label} (pure Python)", ratio, HIT_GOAL_PURE, at_least=False))
    targets.append(_target(f"{label} (compiled, the compass)", ratio, 1.0, at_least=False))
    return targets


def _table(report: dict[str, Any]) -> str:
    lines = [
        f"fb bench (fb {report['fb_version']}, Python {report['machine']['python']}, "
        f"{report['machine']['cpus']} CPUs, load average {report['machine']['loadavg']}); "
        f"median of {report['runs']} interleaved runs.",
        "MB = 10^6 bytes; vs raw-wt = median over runs of raw-wt's time / this time "
        "(> 1 is faster); spread = (max - min) / median of the times; misses = share of "
        "the reads that went to storage.",
    ]
    header = (
        f"  {'phase':<22}{'system':<11}{'MB/s':>9}{'ops/s':>10}{'vs raw-wt':>11}{'spread':>8}"
        f"{'misses':>8}"
    )
    for name, workload in report["workloads"].items():
        lines += [
            "",
            f"{name}: {workload['count']} x {workload['item_bytes'] // KIB} KiB "
            f"{workload['kind']} = {workload['total_bytes'] / MIB:.0f} MiB, budget "
            f"{workload['budget_bytes'] / MIB:.0f} MiB (25%)",
            header,
        ]
        rows = [(phase, system) for phase in PHASES for system in SYSTEMS]
        rows += [(phase, "physical") for phase in PHYSICAL]
        for phase, system in rows:
            s = workload["systems"][system][phase]
            ratio, misses = s["ratio_vs_raw_wt"], s["miss_ratio"]
            lines.append(
                f"  {LABELS[phase]:<22}{system:<11}{s['mb_s']:9.1f}{s['ops_s']:10.0f}"
                f"{'' if ratio is None else f'{ratio:.2f}x':>11}{s['spread']:8.0%}"
                f"{'' if misses is None else f'{misses:.0%}':>8}"
            )
    hits = report["hit_path"]
    lines += ["", "hit path (resident item, ns per op including the loop; spread as above)"]
    for name, label in (
        ("fb", "fb: with handle.load()"),
        ("cachetools", "cachetools LRUCache[key]"),
        ("ordereddict", "OrderedDict move_to_end + [key]"),
        ("loop", "the bare loop"),
    ):
        h = hits[name]
        lines.append(f"  {label:<34}{h['median_ns']:8.0f} ns{h['spread']:8.0%}")
    lines += [
        "",
        f"scaling of fb (16-byte values; spilling keeps {SPILL_RESIDENT:.0%} of the items in "
        f"memory; loads of min(items, {SCALE_LOADS}) random distinct items; memory per handle "
        f"traced up to {TRACE_MAX_ITEMS} items, else the growth of the resident set)",
        f"  {'items':>9} {'mode':<9}{'insert us/op':>14}{'load us/op':>12}{'B/handle':>10}",
    ]
    for row in report["scaling"]:
        lines.append(
            f"  {row['items']:>9} {row['mode']:<9}{row['insert_us']:14.2f}{row['load_us']:12.2f}"
            f"{row['bytes_per_handle']:10.0f} ({row['memory_method']})"
        )
    lines += ["", "targets"]
    for target in report["targets"]:
        mark = "met " if target["met"] else "MISS"
        lines.append(f"  {mark} {target['target']}: {target['value']:.2f} (goal {target['goal']})")
    return "\n".join(line.rstrip() for line in lines)


def _plot(report: dict[str, Any], path: Path) -> None:
    from matplotlib.figure import Figure

    workloads = report["workloads"]
    figure = Figure(figsize=(9, 3.4 * (len(workloads) + 1)), layout="constrained")
    axes = figure.subplots(len(workloads) + 1, 1, squeeze=False)[:, 0]
    width = 0.8 / len(SYSTEMS)
    for axis, (name, workload) in zip(axes, workloads.items(), strict=False):
        for i, system in enumerate(SYSTEMS):
            rows = [workload["systems"][system][phase] for phase in PHASES]
            mbs = [row["mb_s"] for row in rows]
            low = [
                m - workload["total_bytes"] / MB / max(row["seconds"])
                for m, row in zip(mbs, rows, strict=True)
            ]
            high = [
                workload["total_bytes"] / MB / min(row["seconds"]) - m
                for m, row in zip(mbs, rows, strict=True)
            ]
            xs = [p + (i - (len(SYSTEMS) - 1) / 2) * width for p in range(len(PHASES))]
            axis.bar(xs, mbs, width, yerr=[low, high], capsize=2, label=system)
        for style, phase in zip(
            ("--", ":", "-."), ("write", "write_fsync", "read_warm"), strict=True
        ):
            mbs = workload["systems"]["physical"][phase]["mb_s"]
            axis.axhline(
                mbs, color="grey", linestyle=style, linewidth=1, label=f"{LABELS[phase]} {mbs:.0f}"
            )
        axis.set_xticks(range(len(PHASES)), [LABELS[phase] for phase in PHASES])
        axis.set_yscale("log")
        axis.set_ylabel("MB/s (log)")
        axis.set_title(
            f"{name}: {workload['count']} x {workload['item_bytes'] // KIB} KiB "
            f"{workload['kind']}, budget 25%"
        )
        axis.legend(fontsize="small", ncols=2)
    hits = report["hit_path"]
    names = ["fb", "cachetools", "ordereddict", "loop"]
    axes[-1].barh(names, [hits[name]["median_ns"] for name in names])
    axes[-1].invert_yaxis()
    axes[-1].set_xlabel("ns per hit (lower is better)")
    axes[-1].set_title("hit path: a resident item")
    figure.savefig(path, dpi=120)


# -- the command ---------------------------------------------------------------------------


_START = [time.perf_counter()]


def _progress(message: str) -> None:
    click.echo(f"[{time.perf_counter() - _START[0]:6.1f} s] {message}", err=True)


def _cleanup(root: Path, systems: list[_System]) -> None:
    """Close every system and remove ``root``; unlinks release the GIL, so threads help."""
    # A directory serialises its own unlinks: remove each system's directory in parallel.
    with ThreadPoolExecutor(8) as executor:
        list(executor.map(operator.methodcaller("close"), systems))
        leaves = [sub for top in root.iterdir() if top.is_dir() for sub in top.iterdir()]
        list(executor.map(partial(shutil.rmtree, ignore_errors=True), leaves))
    shutil.rmtree(root, ignore_errors=True)


def _require_peers(plot: bool) -> None:
    needed = [*PEERS, "matplotlib"] if plot else list(PEERS)
    missing = [name for name in needed if importlib.util.find_spec(name) is None]
    if missing:
        raise _MissingPeerError(
            f"fb bench compares fb with other packages; missing: {', '.join(missing)}. "
            f"Install them with: {INSTALL}"
        )


def _bench_workload(
    workload: Workload,
    runs: int,
    root: Path,
    seed: int,
    graveyard: list[_System],
    write: WriteMode | None = None,
) -> dict[str, Any]:
    values = _Values(workload, seed)
    times: dict[str, list[list[tuple[float, float | None]]]] = {
        name: [] for name in (*SYSTEMS, "physical")
    }
    for run in range(runs):
        orders = _orders(workload.count, seed + run)
        for name in (*SYSTEMS, "physical"):
            directory = root / workload.name / f"{name}-{run}"
            _progress(f"{workload.name}, run {run + 1} of {runs}: {name}")
            if name == "physical":
                times[name].append(_run_physical(directory, values))
                continue
            factory = fb_factory(write) if name == "fb" else FACTORIES[name]
            system = factory(directory, workload.budget)
            graveyard.append(system)
            times[name].append(_run_system(system, values, orders))
            system.park()
    systems: dict[str, dict[str, Any]] = {}
    for name, per_run in times.items():
        phases = PHYSICAL if name == "physical" else PHASES
        systems[name] = {}
        for i, phase in enumerate(phases):
            reference = None if name == "physical" else [r[i][0] for r in times[REFERENCE]]
            systems[name][phase] = _summary([run[i] for run in per_run], workload, reference)
    return {
        **attrs.asdict(workload),
        "total_bytes": workload.total_bytes,
        "budget_bytes": workload.budget,
        "verify": "length, kind, first and last 8 bytes (arrays: shape, dtype, first and "
        "last element) of every value read",
        "systems": systems,
    }


@click.command()
@click.option(
    "--workload",
    type=click.Choice(["small", "large", "all"]),
    default="all",
    show_default=True,
    help="small: 2000 x 64 KiB bytes; large: 200 x 4 MiB float64 arrays.",
)
@click.option(
    "--runs",
    type=click.IntRange(1),
    default=3,
    show_default=True,
    help="Interleaved runs of every system; the tables show medians.",
)
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where to write (default: the temporary directory); a fresh subdirectory is "
    "made there and removed at the end.",
)
@click.option("--quick", is_flag=True, help="Small sizes, for a smoke test (seconds).")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option(
    "--write",
    type=click.Choice(["default", *WRITE_MODES]),
    default="default",
    show_default=True,
    help="When the fb system's pool writes a value: early (soon after insert), on_evict, "
    "or the pool's default for the store (early on local disk).",
)
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write a PNG bar chart of the results here (needs matplotlib).",
)
def bench(
    workload: str,
    runs: int,
    directory: Path | None,
    quick: bool,
    seed: int,
    as_json: bool,
    write: str,
    plot: Path | None,
) -> None:
    """Measure fb against raw files, zict, diskcache and the machine's physical limits.

    Two workloads, each with a memory budget of 25% of its data: small (2000 x 64 KiB
    bytes) and large (200 x 4 MiB numpy arrays). Each system inserts every item, then
    reads N uniformly random items and N Zipf-distributed ones (s = 1.1), checking every
    value read. Systems: fb (FBPool over FBStore); fb-diskcache (FBPool over the
    diskcache:// backend); raw-wt (a pickle file per key written on insert, an
    OrderedDict LRU in front: the reference of every ratio); zict (Buffer
    over Func(pickle) over File); diskcache (written through, a cachetools LRUCache in
    front); physical (one file written with and without fsync, read back warm; memcpy).
    Runs are interleaved; medians and spreads are shown. Then the hit path (ns per load
    of a resident item) and fb's cost per item at 10k, 100k and 1M items.

    Needs the peers to compare with: pip install 'file-backed[bench]'. A full run takes
    a few minutes, writes about 20 GB and keeps up to 15 GB on disk until it ends (all of
    it removed then); progress goes to standard error.
    """
    _require_peers(plot is not None)
    if plot is not None and not plot.absolute().parent.is_dir():
        # Checked before the minutes of measuring, not when the chart is saved after them.
        raise click.BadParameter(f"no directory {plot.absolute().parent}", param_hint="--plot")
    _START[0] = time.perf_counter()
    table = QUICK if quick else WORKLOADS
    chosen = list(table) if workload == "all" else [workload]
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="fb-bench-", dir=directory))
    graveyard: list[_System] = []
    report: dict[str, Any] = {
        "fb_version": __version__,
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "loadavg": " ".join(f"{x:.1f}" for x in os.getloadavg()),
        },
        "runs": runs,
        "quick": quick,
        "seed": seed,
        "directory": str(root),
        "write": write,
    }
    mode: WriteMode | None = None if write == "default" else write  # type: ignore[assignment]
    try:
        report["workloads"] = {
            name: _bench_workload(table[name], runs, root, seed, graveyard, mode) for name in chosen
        }
        _progress("hit path")
        hits = _hit_path(20_000 if quick else 100_000, max(runs, 5))
        report["hit_path"] = {
            name: {
                "ns": ns,
                "median_ns": statistics.median(ns),
                "spread": (max(ns) - min(ns)) / statistics.median(ns),
            }
            for name, ns in hits.items()
        }
        sizes, spill = (
            ((1_000, 10_000), (1_000,)) if quick else ((10**4, 10**5, 10**6), (10**4, 10**5))
        )
        report["scaling"] = []
        for count in sizes:
            for spilling in (False, True) if count in spill else (False,):
                _progress(f"scaling: {count} items, {'spilling' if spilling else 'resident'}")
                report["scaling"].append(_scale_one(root, count, spilling, graveyard))
    finally:
        _progress("removing what the benchmark wrote")
        _cleanup(root, graveyard)
    report["machine"]["loadavg_end"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
    report["targets"] = _targets(report)
    if plot is not None:
        _plot(report, plot)
    click.echo(json.dumps(report, indent=2) if as_json else _table(report))
