"""Headless Chromium: a screenshot of a report page, to check that it renders.

Debian: `apt-get install chromium` (binary /usr/bin/chromium). Set SHIFTAD_CHROMIUM to use another binary.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
ENV_VAR = "SHIFTAD_CHROMIUM"
HEADLESS_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking")
QUIET_FLAGS = (
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-extensions",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--mute-audio",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
)


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome binary: $SHIFTAD_CHROMIUM if set, else the first of CANDIDATES on PATH."""
    override = os.environ.get(ENV_VAR)
    if override:
        return shutil.which(override)
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def _require_chromium() -> str:
    binary = find_chromium()
    if binary is None:
        looked = os.environ.get(ENV_VAR) or ", ".join(CANDIDATES)
        raise RuntimeError(
            f"no Chromium binary found on PATH (looked for {looked}); "
            f"install it with `apt-get install chromium` (Debian/Ubuntu) or set {ENV_VAR} to a Chrome binary"
        )
    return binary


def screenshot(
    html_path: str | Path,
    png_path: str | Path,
    width: int = 1280,
    height: int = 1600,
    timeout: float = 60,
) -> Path:
    """Render `html_path` in headless Chromium and save a `width`×`height` PNG of its top to `png_path`.

    Waits up to 5 s of virtual time for images (lazy ones in the viewport included) before capturing.
    RuntimeError if Chromium is missing, fails, times out, or writes no screenshot.
    """
    binary = _require_chromium()
    html_path = Path(html_path).resolve()
    if not html_path.is_file():
        raise FileNotFoundError(html_path)
    png_path = Path(png_path).resolve()
    png_path.parent.mkdir(parents=True, exist_ok=True)
    png_path.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="shiftad-chromium-") as profile:
        command = [
            binary,
            *HEADLESS_FLAGS,
            *QUIET_FLAGS,
            f"--user-data-dir={profile}",  # a fresh profile: no lock clash between concurrent runs
            f"--screenshot={png_path}",
            f"--window-size={int(width)},{int(height)}",
            "--virtual-time-budget=5000",
            html_path.as_uri(),
        ]
        env = {**os.environ, "HOME": profile}  # keep ~/.config, ~/.cache and crash dumps out of the real home
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, start_new_session=True, text=True
        )
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # the browser's own process group (renderer, GPU, zygote)
            process.communicate()
            raise RuntimeError(f"Chromium timed out after {timeout} s rendering {html_path}") from None
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    if process.returncode != 0 or not png_path.is_file() or png_path.stat().st_size == 0:
        tail = "\n".join((stdout + stderr).strip().splitlines()[-15:])
        raise RuntimeError(f"Chromium ({binary}) wrote no screenshot (exit {process.returncode}):\n{tail}")
    return png_path
