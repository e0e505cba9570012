"""A run's temporaries carry their owner (process id and host): a later run over the same output
removes those of killed runs (a real ``kill -9``) and never those of a live run, and says so; a
failed write with ``--overwrite`` keeps the previous output whole."""

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import rsprune_geo
from rsprune_geo.cli import main
from rsprune_geo.errors import OutputError
from rsprune_geo.outputs import temporaries
from rsprune_geo.outputs.temporaries import Owner, owner_prefix, remove_stale, replace_folder

from .conftest import shared
from .gates import gated_cli, open_gate

RASTER = shared("deepforest/OSBS_029.tif")
ARGS = ["run", RASTER, "--tile-size", "50", "--keep", "0.3", "--group-px", "100", "-q"]


def _staging(folder: Path) -> list[Path]:
    return sorted(folder.glob(".rsprune-*.tmp.parts"))


def _held_run(out: Path, flag: Path) -> subprocess.Popen:
    """``rsprune run`` held still once its tile table is written, before its decisions, until
    ``flag`` exists: its staging folder beside ``out``, with parts."""
    before = set(_staging(out.parent))
    proc = subprocess.Popen([*gated_cli("rsprune_geo.pipeline:write_decisions", 0, flag), *ARGS, "-o", str(out),
                             "--overwrite"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while proc.poll() is None and time.time() < deadline and not [
            s for s in _staging(out.parent) if s not in before and list(s.glob("tiles/part-*.parquet"))]:
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()[1][-2000:]
    return proc


def test_a_later_run_removes_what_a_killed_run_left_and_never_a_live_runs(tmp_path):
    out = tmp_path / "run.gpkg"
    first = CliRunner().invoke(main, [*ARGS, "-o", str(out)])
    assert first.exit_code == 0, first.output
    old = out.read_bytes()

    live_flag = tmp_path / "go-on"
    live = _held_run(tmp_path / "other.gpkg", live_flag)  # a run of another output, alive
    try:
        live_staging = _staging(tmp_path)
        assert len(live_staging) == 1 and Owner.of(live_staging[0].name).pid == live.pid
        killed = _held_run(out, tmp_path / "never")
        left = [s for s in _staging(tmp_path) if s not in live_staging]
        assert len(left) == 1 and Owner.of(left[0].name) == Owner(killed.pid, temporaries._host())
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        assert out.read_bytes() == old  # the killed overwrite kept the old output whole
        assert left[0].exists()  # and left its staging folder behind
        elsewhere = tmp_path / ".rsprune-1@another-host-abc123.tmp.parts"  # a run of another machine: alive?
        elsewhere.mkdir()
        unmarked = tmp_path / ".rsprune-k2x9qz1a.tmp.parts"  # an older version's: says no owner
        unmarked.mkdir()

        again = subprocess.run([sys.executable, "-m", "rsprune_geo.cli", *ARGS[:-1], "-o", str(out), "--overwrite"],
                               capture_output=True, text=True, timeout=600)  # without -q: its warnings shown
        assert again.returncode == 0, again.stderr
        assert "removed 1 temporary of killed runs" in again.stderr and left[0].name in again.stderr
        assert not left[0].exists()
        assert live_staging[0].exists() and elsewhere.exists() and unmarked.exists()
    finally:
        open_gate(live_flag)
        live.communicate(timeout=300)
    assert live.returncode == 0 and not live_staging[0].exists()  # the live run finished as it should


def test_the_owner_is_read_back_from_a_temporarys_name():
    name = f"{owner_prefix()}x1y2z3.tmp.parts"
    assert Owner.of(name) == Owner(os.getpid(), temporaries._host())
    assert not Owner.of(name).gone()  # this process
    assert Owner.of(".rsprune-12@my-host.example-abc_12.tmp.gpkg-journal") == Owner(12, "my-host.example")
    assert Owner.of(".rsprune-abc.tmp.parts") is None and Owner.of("run.gpkg") is None
    assert not Owner(1, "another-host").gone()  # another machine's process may be alive


def test_stale_geopackage_temporaries_go_with_their_sqlite_companions(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    stem = f".rsprune-{dead.pid}@{temporaries._host()}-q1w2e3.tmp.gpkg"
    for suffix in ("", "-journal", "-wal"):
        (tmp_path / (stem + suffix)).write_bytes(b"x" * 10)
    removed = remove_stale(tmp_path)
    assert sorted(p.name for p, _ in removed) == sorted(stem + s for s in ("", "-journal", "-wal"))
    assert sum(size for _, size in removed) == 30 and not list(tmp_path.iterdir())


@pytest.mark.parametrize("form", ["run.gpkg", "run"])
def test_overwrite_with_a_failing_write_keeps_the_previous_output(form, tmp_path, monkeypatch):
    """A full disk while the new output is written: the previous run is still there, whole."""
    out = tmp_path / form
    rsprune_geo.run(RASTER, out, tile_size=50, keep=0.3)
    before = _snapshot(out)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("rsprune_geo.outputs.geopackage.write_style", full)  # the last step of every GeoPackage
    with pytest.raises(OutputError, match="No space left on device"):
        rsprune_geo.run(RASTER, out, overwrite=True, tile_size=50, keep=0.1)
    assert _snapshot(out) == before
    assert not _staging(tmp_path) and not list(tmp_path.glob(".rsprune-*"))


def test_a_folder_replaced_keeps_the_old_one_when_the_new_cannot_be_moved_in(tmp_path, monkeypatch):
    old, new = tmp_path / "run", tmp_path / "new"
    for folder, text in ((old, "old"), (new, "new")):
        folder.mkdir()
        (folder / "run.json").write_text(text)
    real_replace = os.replace

    def refuse_new(src, dst):
        if Path(src) == new:
            raise OSError(errno.EIO, "Input/output error")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", refuse_new)
    with pytest.raises(OSError):
        replace_folder(new, old)
    assert (old / "run.json").read_text() == "old" and new.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".rsprune-")] == []
    monkeypatch.undo()
    replace_folder(new, old)
    assert (old / "run.json").read_text() == "new" and not new.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


def test_a_reselection_in_place_with_a_failing_write_keeps_the_run(tmp_path, monkeypatch):
    from rsprune_geo.reselect import reselect

    out = tmp_path / "run"
    rsprune_geo.run(RASTER, out, tile_size=50, keep=0.3)
    before = _snapshot(out)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("rsprune_geo.outputs.geopackage.write_style", full)
    with pytest.raises(OutputError):
        reselect(out, None, keep=0.1, overwrite=True)
    assert _snapshot(out) == before and not list(tmp_path.glob(".rsprune-*"))


def _snapshot(path: Path) -> dict[str, bytes]:
    """Every file of an output and its bytes."""
    if path.is_file():
        return {path.name: path.read_bytes()}
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}
