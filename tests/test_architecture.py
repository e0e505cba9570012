"""The shared definitions have one home each: options, schema, encoder registry, pixel layer,
progress and logging; the faces are built from them and the import graph keeps its shape."""

import ast
import json
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import rsprune_geo
from rsprune_geo.cli import main
from rsprune_geo.cli import run as run_cmd
from rsprune_geo.cli.options import cli_message, flag_of
from rsprune_geo.cli.progress import TqdmProgress
from rsprune_geo.config import RunConfig, option_schema, run_options
from rsprune_geo.engine.columns import TileColumns
from rsprune_geo.engine.scaleout import map_tasks
from rsprune_geo.errors import InputError
from rsprune_geo.features import encoder_info, get_encoder, list_encoders, register_encoder
from rsprune_geo.features.base import Encoder
from rsprune_geo.reading.pixels import Scaling, choose_bands, read_preview, window_inside
from rsprune_geo.runs.record import RunRecord
from rsprune_geo.runs.runfile import read_run
from rsprune_geo.runs.vocabulary import STATUS_COLORS, Reason, Status, status_code
from rsprune_geo.stages.selection import SelectionOptions, apply_selection

from .conftest import REPO, shared

PACKAGE = REPO / "rsprune_geo"


# --- options, defined once --------------------------------------------------------------------

def test_plugin_options_json_is_what_the_package_prints():
    printed = CliRunner().invoke(main, ["options", "--json"])
    assert printed.exit_code == 0, printed.output
    shipped = json.loads((REPO / "qgis_plugin" / "rsprune" / "options.json").read_text(encoding="utf-8"))
    assert shipped == json.loads(printed.output), "run `make options-json` after changing an option"


def test_cli_defaults_are_the_config_defaults():
    ctx = run_cmd.command.make_context("run", ["in.tif", "-o", "out.gpkg"])
    options = {k: v for k, v in ctx.params.items() if k not in ("inputs", "output", "overwrite", "quiet",
                                                                "progress_json", "dry_run")}
    assert RunConfig(**options) == RunConfig()
    api_only = {f.name for f, opt, _ in run_options() if opt.flag == ""}
    assert set(options) == {f.name for f in fields(RunConfig)} - api_only
    schema = {item["name"]: item for item in option_schema()}
    for f in fields(RunConfig):
        default = list(f.default) if isinstance(f.default, tuple) else f.default
        assert schema[f.name]["default"] == default and schema[f.name]["help"]


def test_ranges_and_choices_are_checked_from_the_definitions():
    with pytest.raises(InputError, match=r"`keep` 0: must be in \(0, 1\]"):
        RunConfig(keep=0).validated()
    with pytest.raises(InputError, match="`edge` nope: use one of drop, pad"):
        RunConfig(edge="nope").validated()
    with pytest.raises(InputError, match="`tile_size` 4: must be at least 8"):
        RunConfig(tile_size=4).validated()
    config = RunConfig(k=12, prior_bank="bank", bands="3,2,1")
    checked = config.validated()
    assert (checked.k_per_class, checked.prior_bank, checked.bands) == (None, ("bank",), (3, 2, 1))
    assert config.k_per_class == 4  # validated() returns a copy: the caller's config is unchanged


def test_core_messages_name_parameters_and_the_cli_names_flags():
    assert cli_message("`tile_size` 4: use `edge` pad or `overwrite`") == "--tile-size 4: use --edge pad or --overwrite"
    assert cli_message("the `distributed` package") == "the `distributed` package"  # not a parameter
    assert flag_of("output") == "-o" and flag_of("percentiles") is None and flag_of("group_px") == "--group-px"


# --- the schema -------------------------------------------------------------------------------

def test_status_values_colours_and_meaning():
    assert [s.value for s in Status] == ["kept", "not_selected", "duplicate", "low_information", "nodata"]
    assert Status.KEPT == "kept" and isinstance(Status.NODATA, str) and f"{Status.DUPLICATE}" == "duplicate"
    assert STATUS_COLORS["kept"] == Status.KEPT.color == (26, 152, 80)
    assert [s for s in Status if not s.pruned] == [Status.KEPT]


def test_run_record_writes_reads_and_rebuilds_the_run(tmp_path):
    out = tmp_path / "r.gpkg"
    result = rsprune_geo.run([shared("rasterio-tests/RGB.byte.tif")], out, tile_size=128, bands="3,2,1", seed=3)
    tiles, record = read_run(out)
    assert isinstance(record, RunRecord) and record.run_id == result.record.run_id
    assert RunRecord.from_table(record.to_table()) == record  # writes and reads itself back
    assert set(result.record.timings) == set(record.timings) | {"write"}  # the write's time comes after it
    assert record.counts == result.record.counts
    config = record.config()
    assert config.validated() == RunConfig(tile_size=128, bands=(3, 2, 1), seed=3).validated()
    source, scaling = record.source(record.input_paths[0], check=True)
    assert source.bands == (3, 2, 1) and scaling.identity
    assert list(record.sources()) == record.input_paths and len(tiles) == len(result.tiles)


def test_run_record_looks_inputs_up_by_path_through_an_index_kept_with_its_inputs():
    import pickle

    record = RunRecord(inputs=[{"path": f"/chips/{k}.png", "k": k} for k in range(50_000)])
    assert record.has_input("/chips/49999.png") and not record.has_input("/chips/x.png")
    assert record.input("/chips/123.png")["k"] == 123
    with pytest.raises(KeyError):
        record.input("/chips/x.png")
    record.inputs = [{"path": "/other.tif", "k": -1}]  # replaced: indexed again
    assert record.input("/other.tif")["k"] == -1 and not record.has_input("/chips/123.png")
    assert "_by_path" not in pickle.loads(pickle.dumps(record)).__dict__ and "_by_path" not in record.to_dict()
    assert replace(record, run_id="x").input("/other.tif")["k"] == -1


# --- encoders by name -------------------------------------------------------------------------

def test_encoder_registry_names_sizes_and_lookups():
    names = list_encoders()
    assert {"efficientnet-lite0", "rcf-empirical", "rcf-gaussian", "git-rsclip", "git-rsclip-base"} <= set(names)
    info = encoder_info("rcf-gaussian")
    encoder = get_encoder("rcf-gaussian")
    assert (encoder.input_size, encoder.dim) == (info.input_size, info.dim) == (64, 512)
    assert encoder_info("rcf-empirical").needs_bank and not info.needs_bank
    assert "ResNet18_Weights.SENTINEL2_RGB_MOCO" in list_encoders(torchgeo=True)
    assert encoder_info("ResNet18_Weights.SENTINEL2_RGB_MOCO").input_size == 256
    with pytest.raises(InputError, match="unknown encoder"):
        encoder_info("nope")
    with pytest.raises(ValueError, match="registered twice"):
        register_encoder("rcf-gaussian", "again", 64, 512)(Encoder)


# --- one pixel layer --------------------------------------------------------------------------

def test_band_choice_windows_and_stretch(make_raster):
    s2 = make_raster(np.arange(13 * 4 * 4, dtype=np.uint16).reshape(13, 4, 4), name="s2.tif")
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(s2) as src:
        assert choose_bands(src) == (4, 3, 2)  # Sentinel-2's true colour
    assert window_inside(Window(0, 0, 4, 4), 4, 4) and not window_inside(Window(1, 0, 4, 4), 4, 4)
    stretch = Scaling.from_values([np.arange(101.0), np.array([np.nan, 5.0])])
    assert stretch.low == (2.0, 5.0) and stretch.high == (98.0, 6.0)  # NaN ignored, flat band widened


def test_preview_honours_the_runs_bands(tmp_path):
    result = rsprune_geo.run([shared("rasterio-tests/RGB.byte.tif")], tmp_path / "a.gpkg", tile_size=128,
                             bands="3,2,1")
    source, scaling = result.record.source(result.record.input_paths[0])
    swapped, _ = read_preview(source, scaling, max_size=200)
    plain, _ = read_preview(rsprune_geo.open_source(shared("rasterio-tests/RGB.byte.tif")), Scaling(), max_size=200)
    assert np.allclose(swapped[..., 0], plain[..., 2]) and np.allclose(swapped[..., 2], plain[..., 0])


# --- the core reports and never prints --------------------------------------------------------

def test_the_core_prints_nothing_and_reports_through_one_callback(tmp_path, capfd):
    seen = []
    rsprune_geo.run([shared("rasterio-tests/RGB.byte.tif")], tmp_path / "q.gpkg", tile_size=64, keep=0.1,
                    on_progress=lambda stage, done, total: seen.append((stage, done, total)))
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    stages = [s for s, _, _ in seen]
    assert stages[0] == "tiling" and stages[-1] == "writing" and "stage1" in stages
    assert all(0 <= done <= total for _, done, total in seen)


def test_tqdm_adapter_draws_one_bar_per_stage():
    bars = TqdmProgress()
    bars("stage1", 1, 4)
    first = bars.bar
    bars("stage1", 4, 4)
    assert bars.bar is first and first.n == 4
    bars("encoding", 1, 10)
    assert bars.bar is not first and bars.bar.total == 10
    bars.close()
    assert bars.bar is None
    quiet = TqdmProgress(enabled=False)
    quiet("stage1", 1, 4)
    assert quiet.bar is None


def test_map_tasks_runs_on_threads_or_in_this_thread():
    tasks = [(i,) for i in range(20)]
    threaded = dict(map_tasks(lambda x, k=1: x * k, tasks, broadcast={"k": 3}))
    serial = list(map_tasks(lambda x, k=1: x * k, tasks, threads=1, broadcast={"k": 3}))
    assert threaded == {i: 3 * i for i in range(20)} and serial == [(i, 3 * i) for i in range(20)]
    assert list(map_tasks(abs, [])) == []


# --- selection applied to a table, once -------------------------------------------------------

def test_apply_selection_keeps_the_budget_every_scene_and_no_duplicate():
    rng = np.random.default_rng(0)
    n = 60

    def columns() -> TileColumns:
        c = TileColumns.empty(n)
        c.status[:], c.entropy[:] = status_code(Status.KEPT), rng.uniform(3, 7, n)
        c.entropy[[1, 2]] = 7.5  # the two near-duplicates pass stage 1's cut
        c.cluster[:] = np.repeat([0, 1, 2], 20)  # scenes a, a, b
        c.distance[:] = rng.uniform(0, 1, n)
        return c

    order = lambda positions: positions  # noqa: E731  (ties in position order)
    cand = np.arange(n)
    dup = np.zeros(n, dtype=bool)
    dup[[1, 2]] = True
    tiles = columns()
    applied = apply_selection(tiles, cand, np.array(["a", "a", "b"]), 12, SelectionOptions(quota_by="scene"), order,
                              scene_cut=30, duplicates=dup)
    kept = tiles.status == status_code(Status.KEPT)
    assert kept.sum() == applied.kept == 12 and not kept[[1, 2]].any()
    assert (tiles.status[[1, 2]] == status_code(Status.DUPLICATE)).all()
    assert (tiles.reason[[1, 2]] == Reason.DUPLICATE).all()
    assert applied.pool.size == 30 and set(tiles.cluster[kept]) == {0, 1, 2}
    cut = tiles.status == status_code(Status.LOW_INFORMATION)
    assert cut.sum() == 30 and (tiles.reason[cut] == Reason.SCENE_CUT).all() and (tiles.scene_rank > 0).all()
    assert applied.kept_per_cluster.sum() == 12 and (applied.quota >= applied.kept_per_cluster).all()
    everything = columns()
    applied = apply_selection(everything, cand, np.array(["a", "a", "b"]), 100, SelectionOptions(), order)
    assert applied.stage1_decides and (everything.status == status_code(Status.KEPT)).all()


# --- the import graph -------------------------------------------------------------------------

def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            found.add(base)
            found.update(f"{base}.{alias.name}" if node.module else f"{base}{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_no_stage_imports_a_face_and_encoders_know_nothing_of_rasters():
    for path in PACKAGE.rglob("*.py"):
        if "cli" in path.relative_to(PACKAGE).parts:
            continue
        names = _imports(path)
        assert not any("cli" in n.split(".") for n in names), path
        assert not any(n.startswith(("qgis", "tqdm", "click")) for n in names), path
    for path in (PACKAGE / "features").glob("*.py"):
        names = _imports(path)
        assert not any(n.startswith(("rasterio", "..sources", "..information", "..tiling")) for n in names), path


def _module_name(path: Path, root: Path = REPO) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_targets(path: Path, known: set[str], root: Path = REPO) -> set[str]:
    """Package modules ``path`` imports: at module level, inside functions and under
    ``TYPE_CHECKING`` alike (each of them ties the modules, whether or not it runs)."""
    name = _module_name(path, root)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    targets = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
            continue
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            module = f"{base}.{node.module}" if node.module else base
        else:
            module = node.module or ""
        for alias in node.names:
            sub = f"{module}.{alias.name}"
            targets.add(sub if sub in known else module)
    return targets & known


def import_graph(package: Path, root: Path = REPO) -> dict[str, set[str]]:
    """Module -> the package modules it imports when it runs (see :func:`_import_targets`)."""
    files = list(package.rglob("*.py"))
    known = {_module_name(p, root) for p in files}
    return {_module_name(p, root): _import_targets(p, known, root) - {_module_name(p, root)} for p in files}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (its modules in order, the first again at the end), or ``None``."""
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return trail + [node, nxt]
            if nxt not in state and (found := visit(nxt, trail + [node])):
                return found
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node, [])):
            return found
    return None


def test_the_import_graph_has_no_cycle_counting_imports_inside_functions_and_type_only_ones():
    graph = import_graph(PACKAGE)
    # the pixel layer sits at the bottom, over the remote-read helpers only
    assert graph["rsprune_geo.reading.pixels"] <= {"rsprune_geo.errors", "rsprune_geo.reading.remote"}
    assert graph["rsprune_geo.reading.remote"] <= {"rsprune_geo.errors"}
    assert graph["rsprune_geo.errors"] == set() and graph["rsprune_geo.choices"] <= {"rsprune_geo.errors"}
    assert graph["rsprune_geo.jsontypes"] == set()
    assert graph["rsprune_geo.config"] <= {"rsprune_geo.errors", "rsprune_geo.choices", "rsprune_geo.jsontypes"}
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_check_sees_imports_inside_functions_and_type_checking_ones(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from . import b\n")
    (package / "b.py").write_text("def late():\n    from .a import thing\n")  # a -> b -> a, hidden in a function
    (package / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .d import D\n")
    (package / "d.py").write_text("from .c import x\n")  # c -> d -> c, one side type-only
    graph = import_graph(package, tmp_path)
    assert graph["pkg.b"] == {"pkg.a"} and graph["pkg.c"] == {"pkg.d"}
    assert find_cycle(graph) == ["pkg.a", "pkg.b", "pkg.a"]
    (package / "b.py").write_text("")
    assert find_cycle(import_graph(package, tmp_path)) == ["pkg.c", "pkg.d", "pkg.c"]


def test_each_room_holds_its_own_and_imports_downwards():
    graph = import_graph(PACKAGE)
    rooms = {name.split(".")[1] for name in graph if name.count(".") >= 1}
    assert {"runs", "engine", "bank", "stages", "reading", "features", "outputs"} <= rooms
    for name, targets in graph.items():
        if name.startswith("rsprune_geo.stages."):  # a stage never calls its judge, a writer or a face
            assert not {t for t in targets if t.startswith(("rsprune_geo.evaluation", "rsprune_geo.outputs",
                                                            "rsprune_geo.pipeline", "rsprune_geo.cli"))}, name
        if name.startswith(("rsprune_geo.runs.", "rsprune_geo.reading.", "rsprune_geo.features.")):
            # below the stages and the engine; scale-out (where tasks run) is the engine's floor
            above = {t for t in targets if t.startswith(("rsprune_geo.stages", "rsprune_geo.engine"))}
            assert above <= {"rsprune_geo.engine.scaleout"}, name
    vocabulary = _imports(PACKAGE / "runs" / "vocabulary.py")
    assert not {n for n in vocabulary if n.startswith(("rasterio", "geopandas", "shapely", "pyogrio", "..reading"))}
    assert graph["rsprune_geo.runs.vocabulary"] <= {"rsprune_geo.errors", "rsprune_geo.choices"}  # no raster library


def test_no_module_in_the_package_is_over_500_lines():
    long = {str(p.relative_to(REPO)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 500}
    assert not long, long


def code_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """A function's lines, its docstring aside (Google-style Args and Returns are not code)."""
    lines = node.end_lineno - node.lineno + 1
    first = node.body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        lines -= first.end_lineno - first.lineno + 1
    return lines


def test_code_lines_leave_the_docstring_out():
    tree = ast.parse('def f(a):\n    """Doc.\n\n    Args:\n        a: one.\n    """\n    return a\n')
    assert code_lines(tree.body[0]) == 2


def test_no_function_in_the_package_is_over_80_lines():
    long = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and code_lines(node) > 80:
                long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({code_lines(node)})")
    assert not long, long


def test_option_types_from_annotations():
    from rsprune_geo.config import base_type, is_multiple, is_optional

    assert (base_type(int | None), base_type(float), base_type(bool), base_type(tuple[int, ...] | None)) == (
        "int", "float", "bool", "str")
    assert is_multiple(tuple[str, ...]) and not is_multiple(tuple[int, ...] | None) and not is_multiple(str)
    assert is_optional(int | None) and not is_optional(int)


def test_untyped_dictionaries_are_json_or_named_exceptions():
    """``dict[str, Any]`` marks JSON (as ``JsonObject``); elsewhere dictionaries say what they hold, but
    for torch samples (torchgeo's own type), click's and numpy's keyword arguments, and a table row."""
    allowed = {"rsprune_geo/loaders/datasets.py": 3, "rsprune_geo/cli/options.py": 1,
               "rsprune_geo/bank/building.py": 1, "rsprune_geo/runs/inputs.py": 1}
    found = {}
    for path in PACKAGE.rglob("*.py"):
        count = path.read_text(encoding="utf-8").count("dict[str, Any]")
        name = str(path.relative_to(REPO))
        if count and name != "rsprune_geo/jsontypes.py":
            found[name] = count
    assert found == allowed
