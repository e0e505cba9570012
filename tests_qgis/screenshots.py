"""Screenshots of the plugin as a person sees it, taken inside QGIS (``make screenshots``).

Run by ``tests_qgis/take_screenshots.sh`` as ``qgis --code tests_qgis/screenshots.py RASTER``
under Xvfb: opens the RS-Prune dialog on the loaded raster, sets up the backend in the profile's
folder (quick once it exists), runs the prune and grabs the main window with the styled result.
Writes docs/screenshots/{dialog,setup,result}.png, then quits QGIS.
"""

import os
import time

from qgis.core import QgsProject
from qgis.PyQt.QtCore import QCoreApplication, QTimer
from qgis.utils import iface, plugins

OUT = os.environ["RSPRUNE_SCREENSHOTS"]
BACKEND = os.environ["RSPRUNE_BACKEND_ENV"]
WHEELS = os.environ.get("RSPRUNE_WHEELHOUSE", "")


def wait(condition, seconds):
    deadline = time.time() + seconds
    while not condition() and time.time() < deadline:
        QCoreApplication.processEvents()
        time.sleep(0.05)


def shoot():
    plugin = plugins["rsprune"]
    raster = next(layer for layer in QgsProject.instance().mapLayers().values())
    iface.setActiveLayer(raster)
    from rsprune.dialog import PruneDialog

    dialog = PruneDialog([raster.source()], iface.mainWindow())
    dialog.tile_size.setValue(128)
    dialog.show()
    wait(lambda: False, 1)
    dialog.grab().save(os.path.join(OUT, "dialog.png"))
    params = dialog.params()
    params.output = os.path.join(OUT, "..", "..", "qgis-test-output", "screenshot-run.gpkg")
    dialog.close()

    setup = plugin.set_up_backend()
    setup.environment.setText(BACKEND)
    setup.wheelhouse.setText(WHEELS)
    outcome = {}
    task = setup.start()
    task.on_done = lambda ok, t: (setup._done(ok, t), outcome.update(ok=ok))
    wait(lambda: bool(outcome), 1800)
    setup.test()
    wait(lambda: False, 1)
    setup.grab().save(os.path.join(OUT, "setup.png"))
    setup.close()

    plugin.start(params, above=raster, use_in_process=False)
    wait(lambda: plugin.outcome is not None, 600)
    iface.mapCanvas().setExtent(raster.extent())
    iface.mapCanvas().refresh()
    wait(lambda: False, 3)
    iface.mainWindow().grab().save(os.path.join(OUT, "result.png"))
    QgsProject.instance().setDirty(False)  # quit without asking to save
    iface.actionExit().trigger()


QTimer.singleShot(3000, shoot)
