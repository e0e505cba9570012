"""Remote rasters over HTTP range requests: a loopback server started and stopped by the test."""

import http.server
import shutil
import threading
from pathlib import Path

import pytest

import rsprune_geo
from rsprune_geo.errors import InputError

from .conftest import shared


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files with HTTP range requests, as object stores do; ``fail`` counts down
    requests answered 503 (``-1``: every ranged request fails after the first ``ok`` ones)."""

    def log_message(self, *args):  # quiet
        pass

    def do_GET(self):  # noqa: N802
        server = self.server
        server.requests += 1
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        ranged = self.headers.get("Range")
        if ranged and (server.fail > 0 or (server.fail < 0 and server.requests > server.ok)):
            server.fail -= 1 if server.fail > 0 else 0
            server.failed += 1
            self.send_error(503)
            return
        if ranged:
            start, _, end = ranged.split("=")[1].partition("-")
            start, end = int(start), min(int(end or len(data) - 1), len(data) - 1)
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
            body = data[start : end + 1]
        else:
            self.send_response(200)
            body = data
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_HEAD(self):  # noqa: N802
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(path.stat().st_size))
        self.end_headers()


@pytest.fixture
def server(tmp_path):
    shutil.copy(shared("rasterio-tests/RGB.byte.tif"), tmp_path / "RGB.byte.tif")

    def handler(*args, **kwargs):
        return RangeHandler(*args, directory=str(tmp_path), **kwargs)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.requests, httpd.failed, httpd.fail, httpd.ok = 0, 0, 0, 0
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def url(httpd, name):
    return f"/vsicurl/http://127.0.0.1:{httpd.server_address[1]}/{name}"


def test_a_remote_cog_gives_the_same_geopackage_as_the_local_file(server, tmp_path):
    local = rsprune_geo.run([shared("rasterio-tests/RGB.byte.tif")], tile_size=128, keep=0.3)
    remote = rsprune_geo.run([url(server, "RGB.byte.tif")], tmp_path / "remote.gpkg", tile_size=128, keep=0.3)
    assert server.requests > 0  # it was read over HTTP
    assert remote.tiles.status.tolist() == local.tiles.status.tolist()
    assert remote.tiles.entropy.round(9).tolist() == local.tiles.entropy.round(9).tolist()
    assert remote.record.inputs[0]["path"].startswith("/vsicurl/http://127.0.0.1")


def test_a_dropped_request_is_retried_and_a_dead_server_is_one_clear_error(server, tmp_path):
    server.fail = 2  # the first two ranged requests get 503: GDAL retries them (GDAL_HTTP_MAX_RETRY)
    result = rsprune_geo.run([url(server, "RGB.byte.tif")], tmp_path / "retried.gpkg", tile_size=128,
                             keep=0.3)
    assert server.failed == 2 and (result.tiles.status == "kept").sum() > 0
    server.fail, server.ok, server.requests = -1, 0, 0  # every ranged request fails from now on
    out = tmp_path / "dead.gpkg"
    with pytest.raises(InputError, match=r"RGB\.byte\.tif"):
        rsprune_geo.run([url(server, "RGB.byte.tif") + "?fresh"], out, tile_size=128)
    assert not out.exists()


def test_credentials_in_a_url_are_never_stored_or_shown(server, tmp_path):
    secret_url = url(server, "RGB.byte.tif").replace("http://", "http://reader:s3cr3t@") + "?token=t0k3n&x=1"
    out = tmp_path / "secret.gpkg"
    result = rsprune_geo.run([secret_url], out, tile_size=128, keep=0.3)
    assert (result.tiles.status == "kept").sum() > 0
    stored = out.read_bytes()
    assert b"s3cr3t" not in stored and b"t0k3n" not in stored  # not in the record, not in the tiles
    tiles, record = rsprune_geo.read_run(out)
    assert "REDACTED" in record.inputs[0]["path"] and tiles.source.str.contains("REDACTED").all()
    with pytest.raises(InputError, match="carried credentials"):
        record.source(record.inputs[0]["path"])
    from rsprune_geo.outputs.report import write_report

    report = write_report(out, tmp_path / "report.html")  # the gallery says what it cannot read
    assert report.exists() and "s3cr3t" not in report.read_text()
    server.fail = -1  # the CLI's one-line error for a dead server hides them too
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "rsprune_geo.cli", "run", secret_url + "&again", "-o",
                           str(tmp_path / "dead.gpkg"), "--tile-size", "128"], capture_output=True, text=True)
    assert proc.returncode == 1 and "Error: " in proc.stderr
    assert "s3cr3t" not in proc.stderr and "t0k3n" not in proc.stderr
