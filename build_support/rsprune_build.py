"""The package's build backend.

Setuptools, with two guards. It refuses to build a wheel without the files the package ships (the
default encoder's network exported to ONNX, the default prior-bank profile), so an install from a
wheel never needs torch for the default path. And it builds from a clean ``build/lib``: setuptools
reuses that folder, so a module moved or deleted in the source would still ship, stale, in the wheel.

``make shipped`` makes them (it needs the ``torch`` extra and ../shared/data/scenes/ucmerced).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import build_meta as _setuptools
from setuptools.build_meta import *  # noqa: F401,F403  the PEP 517/660 hooks, unchanged but one

#: What a wheel must carry, relative to the source tree.
SHIPPED = ("rsprune_geo/shipped/efficientnet-lite0.onnx.xz", "rsprune_geo/shipped/efficientnet-lite0.onnx.json",
           "rsprune_geo/shipped/LICENSE-efficientnet-lite0.txt", "rsprune_geo/shipped/ucmerced.rsbank")


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    """Setuptools' wheel, once the shipped files are there."""
    missing = [name for name in SHIPPED if not Path(name).is_file()]
    if missing:
        raise SystemExit(f"rsprune_geo: {', '.join(missing)} missing: run `make shipped` before building a wheel "
                         "(it exports the default encoder's network and builds the default prior-bank profile)")
    shutil.rmtree("build/lib", ignore_errors=True)  # only what the source holds now goes in
    return _setuptools.build_wheel(wheel_directory, config_settings, metadata_directory)
