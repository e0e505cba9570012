"""Set up the backend from QGIS: a Python environment outside the plugin folder with rsprune_geo.

Plugins that need torch keep such an environment apart from QGIS's Python (numpy and GDAL
clash) and outside the plugin folder (a plugin update wipes it). The environment gets the
rsprune_geo version this plugin was built with: the wheel shipped in ``wheels/`` when there is
one, else that version from the package index, with the versions tested together
(``wheels/constraints.txt``). By default without torch (the default encoder's network and prior-bank
profile ship in the wheel and run on onnxruntime); with PyTorch on request (the ``torch`` extra,
for the torchgeo and Git-RSCLIP encoders and GPUs), optionally from PyTorch's CPU-only index.
Every step runs as a subprocess (an argument list, never a shell) whose output is streamed to a
log, and Cancel stops it.
"""

from __future__ import annotations

import glob
import os
import platform
import shutil
import subprocess
import sys
from dataclasses import dataclass, field

from . import backend, options

ENV_KEY = "rsprune/backend_env"
PYTHON_KEY = "rsprune/base_python"
#: PyTorch's index of CPU-only wheels (a fraction of the CUDA build's size).
CPU_TORCH_INDEX = "https://download.pytorch.org/whl/cpu"
#: What each install takes on disk (``benchmarks/results/install.md``, Linux x86-64).
LEAN_SIZE, TORCH_SIZE = "about 1.1 GB", "about 7.1 GB"  # benchmarks/results/install.md
PLUGIN_DIR = os.path.dirname(__file__)


def default_environment() -> str:
    """``<QGIS profile>/rsprune-backend``: beside the plugins folder, not in it."""
    from qgis.core import QgsApplication

    return os.path.join(QgsApplication.qgisSettingsDirPath(), "rsprune-backend")


def plugin_wheel() -> str | None:
    """The rsprune_geo wheel shipped inside the plugin (``wheels/``), if any."""
    found = sorted(glob.glob(os.path.join(PLUGIN_DIR, "wheels", "rsprune_geo-*.whl")))
    return found[-1] if found else None


def plugin_constraints() -> str | None:
    """The versions tested together, shipped beside the wheel (``wheels/constraints.txt``)."""
    path = os.path.join(PLUGIN_DIR, "wheels", "constraints.txt")
    return path if os.path.isfile(path) else None


def base_python() -> str | None:
    """The Python the environment is made from: the setting, else python3 on the PATH."""
    from qgis.core import QgsSettings

    chosen = QgsSettings().value(PYTHON_KEY, "", type=str)
    return chosen or shutil.which("python3") or shutil.which("python")


def environment_python(env: str) -> str:
    """The environment's Python."""
    return os.path.join(env, "Scripts", "python.exe") if os.name == "nt" else os.path.join(env, "bin", "python")


def environment_cli(env: str) -> str:
    """The environment's rsprune command."""
    return os.path.join(env, "Scripts", "rsprune.exe") if os.name == "nt" else os.path.join(env, "bin", "rsprune")


@dataclass
class SetupPlan:
    """What the setup does.

    The environment folder, the Python it is made from, where rsprune_geo comes from (always with the
    ``plots`` extra), whether PyTorch comes too (``with_torch``, the ``torch`` extra) and whether from
    PyTorch's CPU-only index (``cpu_torch``).
    """

    environment: str
    python: str
    wheel: str | None = None
    find_links: list[str] = field(default_factory=list)
    with_torch: bool = False
    cpu_torch: bool = False
    pip_options: list[str] = field(default_factory=list)
    constraints: str | None = None

    def commands(self) -> list[list[str]]:
        """The steps, each an argument list."""
        env_python = environment_python(self.environment)
        pip = [env_python, "-m", "pip", "--disable-pip-version-check", "install", *self.pip_options]
        for folder in self.find_links:
            pip += ["--find-links", folder]
        if self.constraints:
            pip += ["--constraint", self.constraints]
        steps = [[self.python, "-m", "venv", self.environment]]
        if self.with_torch and self.cpu_torch:
            steps.append([*pip, "torch", "torchvision", "--index-url", CPU_TORCH_INDEX])
        extras = "plots,torch" if self.with_torch else "plots"  # plots: the Processing report's figures
        package = f"{self.wheel}[{extras}]" if self.wheel else f"rsprune_geo[{extras}]=={options.PACKAGE_VERSION}"
        steps.append([*pip, package])
        return steps


def stream(arguments: list[str], log, is_canceled) -> int:
    """Run one step, every output line to ``log``; Cancel (polled ten times a second) stops it."""
    creation = {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP} if os.name == "nt" else {}
    process = subprocess.Popen(arguments, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, text=True, shell=False, **creation)
    try:
        for line in backend.lines_of(process, process.stdout, is_canceled):
            log(line.rstrip())
        return process.wait()
    finally:
        if process.poll() is None:
            process.kill()


def run_setup(plan: SetupPlan, log, is_canceled) -> str:
    """Carry out ``plan``, then test the backend; returns its ``rsprune`` command."""
    if not plan.python or not os.path.isfile(plan.python):
        raise backend.BackendError("no Python to make the environment from: choose one (3.11 or newer)")
    for step in plan.commands():
        log("$ " + " ".join(step))
        code = stream(step, log, is_canceled)
        if code != 0:
            raise backend.BackendError(f"setup step failed (exit code {code}): {' '.join(step[:5])}… — see the log")
    cli = environment_cli(plan.environment)
    version = check_backend(cli)
    log(f"rsprune_geo {version} is ready: {cli}")
    return cli


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def check_backend(cli: str | None) -> str:
    """The backend's rsprune_geo version.

    An error when it is missing, not rsprune_geo's command, or older than the version this plugin was
    built with.
    """
    if not cli or not os.path.isfile(cli):
        raise backend.BackendError(f"{cli or 'rsprune'}: no such command")
    try:
        answer = subprocess.run([cli, "--version"], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise backend.BackendError(f"{cli}: does not run ({exc})") from None
    import re

    match = re.match(r"rsprune, version (\S+)\s*$", answer.stdout.strip())
    if answer.returncode != 0 or match is None:
        said = (answer.stderr or answer.stdout).strip().splitlines()
        raise backend.BackendError(f"{cli}: not rsprune_geo's command ({said[0][:200] if said else 'no answer'})")
    version = match.group(1)
    if _version_tuple(version) < _version_tuple(options.PACKAGE_VERSION):
        raise backend.BackendError(f"{cli}: rsprune_geo {version} is older than {options.PACKAGE_VERSION}, which this "
                                   "plugin needs; run Set up backend again")
    return version


def use_backend(cli: str) -> None:
    """Make ``cli`` the plugin's rsprune command."""
    from qgis.core import QgsSettings

    QgsSettings().setValue(backend.SETTINGS_KEY, cli)


def diagnostics() -> str:
    """A report for bug reports: QGIS, Python, the backend's path and version, torch, GDAL."""
    from qgis.core import Qgis

    lines = [f"QGIS {Qgis.version()}", f"QGIS Python {sys.version.split()[0]} ({platform.platform()})"]
    try:
        from osgeo import gdal

        lines.append(f"QGIS GDAL {gdal.__version__}")
    except ImportError:
        lines.append("QGIS GDAL: not importable")
    lines.append(f"plugin built for rsprune_geo {options.PACKAGE_VERSION}")
    cli = backend.configured_cli()
    lines.append(f"backend command: {cli or 'not configured'}")
    lines.append(f"in-process backend: {'allowed' if backend.in_process_allowed() else 'off (default)'}")
    if cli:
        try:
            lines.append(f"backend rsprune_geo: {check_backend(cli)}")
        except backend.BackendError as exc:
            lines.append(f"backend: {exc}")
        python = os.path.join(os.path.dirname(cli), "python.exe" if os.name == "nt" else "python")
        if os.path.isfile(python):
            probe = ("import sys, rasterio, onnxruntime; print('backend Python', sys.version.split()[0]); "
                     "print('backend GDAL', rasterio.__gdal_version__); print('onnxruntime', onnxruntime.__version__)\n"
                     "try:\n import torch\n print('torch', torch.__version__, '(CUDA)' if torch.cuda.is_available() "
                     "else '(CPU)')\nexcept ImportError:\n print('torch: not installed (the default install)')")
            answer = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=300)
            lines += answer.stdout.strip().splitlines() or [f"backend probe failed: {answer.stderr.strip()[-200:]}"]
    return "\n".join(lines)


# ---- the dialog ---------------------------------------------------------------------------------

from qgis.core import QgsApplication, QgsTask  # noqa: E402  (QGIS-only part of the module)
from qgis.PyQt.QtCore import QObject, pyqtSignal  # noqa: E402
from qgis.PyQt.QtWidgets import (  # noqa: E402
    QCheckBox,
    QDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
)

from .compat import CAN_CANCEL  # noqa: E402


class _Lines(QObject):
    """Carries log lines from the task's thread to the dialog's (Qt queues the signal)."""

    line = pyqtSignal(str)


class SetupTask(QgsTask):
    """Runs a :class:`SetupPlan` in the background; ``cli`` holds the backend when it succeeds."""

    def __init__(self, plan: SetupPlan, on_done=None):
        super().__init__("RS-Prune: set up backend", CAN_CANCEL)
        self.plan = plan
        self.lines = _Lines()
        self.on_done = on_done
        self.cli: str | None = None
        self.error: str | None = None

    def run(self) -> bool:
        self.cli, self.error = backend.outcome(lambda: run_setup(self.plan, self.lines.line.emit, self.isCanceled))
        return self.cli is not None

    def finished(self, ok: bool) -> None:
        if ok and self.cli:
            use_backend(self.cli)
        if self.on_done:
            self.on_done(ok, self)


class SetupDialog(QDialog):
    """Set up backend: where, from which Python, with or without PyTorch; a live log, Cancel, Test."""

    def __init__(self, parent=None, on_ready=None):
        super().__init__(parent)
        self.setWindowTitle("RS-Prune: set up backend")
        self.task: SetupTask | None = None
        self.on_ready = on_ready  # called when a backend is ready (the plugin clears a stale error)
        layout = QVBoxLayout(self)
        form = QFormLayout()
        self.environment = QLineEdit(default_environment())
        self.python = QLineEdit(base_python() or "")
        self.wheelhouse = QLineEdit()
        self.wheelhouse.setPlaceholderText("optional: a folder of wheels to install from first")
        self.with_torch = QCheckBox(f"Also PyTorch ({TORCH_SIZE} in all instead of {LEAN_SIZE}): only for the "
                                    "torchgeo and Git-RSCLIP encoders or a GPU")
        self.cpu_torch = QCheckBox("CPU-only PyTorch (from PyTorch's index, a fraction of the CUDA build's size)")
        self.cpu_torch.setEnabled(False)
        self.with_torch.toggled.connect(self.cpu_torch.setEnabled)
        wheel = plugin_wheel()
        form.addRow("Environment folder", self.environment)
        form.addRow("Made from Python", self.python)
        form.addRow("rsprune_geo", QLabel(os.path.basename(wheel) if wheel else
                                          f"rsprune_geo=={options.PACKAGE_VERSION} from the package index"))
        form.addRow("Wheelhouse", self.wheelhouse)
        form.addRow("", self.with_torch)
        form.addRow("", self.cpu_torch)
        layout.addLayout(form)
        self.log = QPlainTextEdit(readOnly=True)
        self.log.setMinimumSize(640, 280)
        layout.addWidget(self.log)
        self.status = QLabel()
        self.status.setWordWrap(True)
        layout.addWidget(self.status)
        buttons = QHBoxLayout()
        self.start_button = QPushButton("Set up")
        self.cancel_button = QPushButton("Cancel")
        self.test_button = QPushButton("Test")
        close = QPushButton("Close")
        for button in (self.start_button, self.cancel_button, self.test_button, close):
            buttons.addWidget(button)
        layout.addLayout(buttons)
        self.cancel_button.setEnabled(False)
        self.start_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(self.cancel)
        self.test_button.clicked.connect(self.test)
        close.clicked.connect(self.reject)

    def plan(self) -> SetupPlan:
        """The plan the fields describe."""
        links = [self.wheelhouse.text().strip()] if self.wheelhouse.text().strip() else []
        return SetupPlan(environment=self.environment.text().strip(), python=self.python.text().strip(),
                         wheel=plugin_wheel(), find_links=links, with_torch=self.with_torch.isChecked(),
                         cpu_torch=self.with_torch.isChecked() and self.cpu_torch.isChecked(),
                         constraints=plugin_constraints())

    def start(self) -> SetupTask:
        self.log.clear()
        self.status.setText("setting up… (PyTorch is large: minutes)" if self.with_torch.isChecked()
                            else "setting up… (about a minute where the package index is near)")
        self.task = SetupTask(self.plan(), on_done=self._done)
        self.task.lines.line.connect(self.log.appendPlainText)
        self.start_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        QgsApplication.taskManager().addTask(self.task)
        return self.task

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()

    def _done(self, ok: bool, task: SetupTask) -> None:
        self.start_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        if ok:
            self.status.setText(f"ready: {task.cli} is the plugin's backend")
            if self.on_ready is not None:
                self.on_ready()
        else:
            self.status.setText(task.error or "canceled: the environment may be incomplete; run Set up again")

    def test(self) -> str | None:
        """Check the configured backend's version against the plugin's; says the outcome."""
        try:
            version = check_backend(backend.configured_cli())
        except backend.BackendError as exc:
            self.status.setText(f"test failed: {exc}")
            return None
        self.status.setText(f"test passed: rsprune_geo {version} (this plugin needs {options.PACKAGE_VERSION})")
        return version
