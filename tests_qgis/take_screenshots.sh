#!/bin/sh
# Screenshots of the plugin in QGIS under Xvfb (make screenshots): a throwaway QGIS profile with
# the plugin enabled, the backend set up in that profile from the package's wheel.
set -e
REPO=$(cd "$(dirname "$0")/.." && pwd)
WORK="$REPO/qgis-test-output/screenshot-profile"
PLUGINS="$WORK/profiles/default/python/plugins"
mkdir -p "$PLUGINS" "$WORK/profiles/default/QGIS" "$REPO/docs/screenshots" "$WORK/wheels"
rm -rf "$PLUGINS/rsprune" && cp -r "$REPO/qgis_plugin/rsprune" "$PLUGINS/rsprune"
cp "$REPO/constraints.txt" "$PLUGINS/rsprune/wheels/constraints.txt" 2>/dev/null || {
  mkdir -p "$PLUGINS/rsprune/wheels" && cp "$REPO/constraints.txt" "$PLUGINS/rsprune/wheels/constraints.txt"; }
"$REPO/.venv/bin/python" -m pip wheel -q --no-deps -w "$PLUGINS/rsprune/wheels" "$REPO"
printf '[PythonPlugins]\nrsprune=true\n' > "$WORK/profiles/default/QGIS/QGIS3.ini"
Xvfb :99 -screen 0 1600x1000x24 >/dev/null 2>&1 & XVFB=$!
trap 'kill $XVFB' EXIT
sleep 2
RASTER="${RSPRUNE_SHARED_DATA:-$REPO/../shared/data}/geotiff/rasterio-tests/RGB.byte.tif"
STAMP="$WORK/started"
touch "$STAMP"
DISPLAY=:99 RSPRUNE_SCREENSHOTS="$REPO/docs/screenshots" RSPRUNE_BACKEND_ENV="$WORK/rsprune-backend" \
  timeout 2400 qgis --profiles-path "$WORK" --nologo --noversioncheck --code "$REPO/tests_qgis/screenshots.py" \
  "$RASTER" || echo "QGIS exited with $? (checking the screenshots)"
for shot in dialog setup result; do
  [ "$REPO/docs/screenshots/$shot.png" -nt "$STAMP" ] || { echo "no new $shot.png"; exit 1; }
done
ls -l "$REPO/docs/screenshots"
