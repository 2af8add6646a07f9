"""`fb bench` in --quick mode: every system and phase is measured, reported, and cleaned up."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

for _peer in ("numpy", "zict", "diskcache", "cachetools", "matplotlib"):
    pytest.importorskip(_peer, reason=f"fb bench needs {_peer} (the `bench` extra)")

from fb._bench import PHASES, PHYSICAL, SYSTEMS, _table  # noqa: E402 - after the skips
from fb._bench_systems import _FbSystem, fb_factory  # noqa: E402 - after the skips
from fb.cli import main  # noqa: E402 - after the skips


@pytest.fixture(name="report", scope="module")
def fixture_report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Run the quick benchmark once (two interleaved runs) for every test of the module."""
    work = tmp_path_factory.mktemp("bench")
    plot = work / "bench.png"
    result = CliRunner().invoke(
        main,
        [
            "bench",
            "--quick",
            "--runs",
            "2",
            "--json",
            "--write",
            "early",
            "--dir",
            str(work / "data"),
            "--plot",
            str(plot),
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    report: dict[str, object] = json.loads(result.stdout)
    report["_work"] = str(work)
    return report


def test_write_option_reaches_the_fb_pool(tmp_path: Path) -> None:
    """``--write`` picks the fb system's write mode; the report says which was asked for."""
    system = fb_factory("on_evict")(tmp_path, 1000)
    assert isinstance(system, _FbSystem)
    assert system.pool.write == "on_evict"
    system.close()


def test_report_names_the_write_mode(report: dict[str, object]) -> None:
    """The report records the ``--write`` it was run with."""
    assert report["write"] == "early"


def test_every_system_and_phase(report: dict[str, object]) -> None:
    """Each workload has every system with every phase, timed once per run."""
    workloads = report["workloads"]
    assert isinstance(workloads, dict)
    assert set(workloads) == {"small", "large"}
    for workload in workloads.values():
        systems = workload["systems"]
        assert set(systems) == {*SYSTEMS, "physical"}
        for name in SYSTEMS:
            assert set(systems[name]) == set(PHASES)
            for phase in PHASES:
                row = systems[name][phase]
                assert len(row["seconds"]) == 2
                assert row["mb_s"] > 0
                assert row["ops_s"] > 0
                assert row["ratio_vs_raw_wt"] > 0
        assert set(systems["physical"]) == set(PHYSICAL)
        assert all(row["ratio_vs_raw_wt"] is None for row in systems["physical"].values())
        assert all(row["ratio_vs_raw_wt"] == 1.0 for row in systems["raw-wt"].values())


def test_hit_path_scaling_and_targets(report: dict[str, object]) -> None:
    """The hit path, the scaling rows and the targets are reported."""
    hit_path = report["hit_path"]
    assert isinstance(hit_path, dict)
    assert set(hit_path) == {"fb", "cachetools", "ordereddict", "loop"}
    assert all(entry["median_ns"] > 0 for entry in hit_path.values())
    scaling = report["scaling"]
    assert isinstance(scaling, list)
    assert [(row["items"], row["mode"]) for row in scaling] == [
        (1_000, "resident"),
        (1_000, "spilling"),
        (10_000, "resident"),
    ]
    assert all(row["insert_us"] > 0 and row["load_us"] > 0 for row in scaling)
    targets = report["targets"]
    assert isinstance(targets, list)
    # Per workload its phases and its total; the large insert's ceiling; two hit-path goals.
    assert len(targets) == 2 * (len(PHASES) + 1) + 1 + 2
    assert all(isinstance(target["met"], bool) for target in targets)


def test_plot_written_and_nothing_left_behind(report: dict[str, object]) -> None:
    """--plot writes a PNG; the data directory is empty again afterwards."""
    work = Path(str(report["_work"]))
    assert (work / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list((work / "data").iterdir()) == []


def test_table(report: dict[str, object]) -> None:
    """The table (what the command prints without --json) has every row and the targets."""
    table = _table(report)
    for word in (*SYSTEMS, "physical", "hit path", "scaling of fb", "targets"):
        assert word in table
    assert table.count("MISS") + table.count("met ") == len(report["targets"])  # type: ignore[arg-type]


def test_missing_peer(monkeypatch: pytest.MonkeyPatch) -> None:
    """A missing peer package fails with exit status 2 and names the extra to install."""
    monkeypatch.setitem(sys.modules, "zict", None)
    # Through the fb group, as a user runs it (click remembers a command's help options
    # from the context it last ran in; the CLI reference test renders the group's).
    result = CliRunner().invoke(main, ["bench", "--quick"])
    assert result.exit_code == 2
    assert "zict" in result.output
    assert "pip install 'file-backed[bench]'" in result.output
