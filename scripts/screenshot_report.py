#!/usr/bin/env python3
"""Developer step: render the demo HTML report and screenshot it with headless Chromium.

    python scripts/screenshot_report.py /tmp/report.png
    python scripts/screenshot_report.py /tmp/report.png --report existing.json --window-size 1280,9000

Without --report it audits the bundled demo (an overfitted MLP on the breast-cancer data; about ten
seconds). The HTML is written next to the PNG (same name, .html) unless --html says otherwise.
Needs a Chromium binary: ``apt-get install -y chromium`` on Debian/Ubuntu, or pass --chromium.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

CHROMIUM_NAMES = ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# Headless, offline, no profile state: the page must render from the file alone.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--hide-scrollbars")
TIMEOUT = 60.0


def find_chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def demo_report():  # type: ignore[no-untyped-def]
    import privaudit
    from privaudit import datasets

    split = datasets.breast_cancer()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the demo MLP may not converge; it still memorises
        model = datasets.overfit_model().fit(split.X_train, split.y_train)
    return privaudit.audit(model, (split.X_train, split.y_train), (split.X_holdout, split.y_holdout),
                           reference_models=2, cache_dir=False, n_bootstrap=0, model_name="demo-mlp",
                           command_line=["scripts/screenshot_report.py"])


def screenshot(chromium: str, html: Path, png: Path, window_size: str = "1280,2400") -> None:
    """Screenshot ``html`` into ``png``; raises RuntimeError with Chromium's stderr on failure."""
    with tempfile.TemporaryDirectory(prefix="privaudit-chromium-") as profile:
        cmd = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={png}",
               f"--window-size={window_size}", html.resolve().as_uri()]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        try:
            _out, err = proc.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the whole group: the wrapper script and its browser
            _out, err = proc.communicate()
            raise RuntimeError(f"chromium timed out after {TIMEOUT:.0f}s:\n{err[-4000:]}") from None
    if proc.returncode != 0 or not png.is_file():
        raise RuntimeError(f"chromium exited {proc.returncode} without a screenshot:\n{err[-4000:]}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("png", type=Path, help="where to write the screenshot")
    ap.add_argument("--html", type=Path, help="where to write the HTML (default: next to the PNG)")
    ap.add_argument("--report", type=Path, help="render this JSON report instead of auditing the demo")
    ap.add_argument("--window-size", default="1280,2400", help="WIDTH,HEIGHT in CSS pixels (default 1280,2400)")
    ap.add_argument("--chromium", help="Chromium binary (default: the first of %s on PATH)" % ", ".join(CHROMIUM_NAMES))
    args = ap.parse_args(argv)

    chromium = args.chromium or find_chromium()
    if not chromium:
        print("no Chromium found; install it (apt-get install -y chromium) or pass --chromium", file=sys.stderr)
        return 2
    from privaudit.report import Report, write_report

    report = Report.from_json(args.report.read_text(encoding="utf-8")) if args.report else demo_report()
    html = args.html or args.png.with_suffix(".html")
    args.png.parent.mkdir(parents=True, exist_ok=True)
    write_report(report, str(html))
    try:
        screenshot(chromium, html, args.png, args.window_size)
    except RuntimeError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"wrote {html} and {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
