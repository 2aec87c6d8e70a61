"""The HTML report as a newcomer reads it (issue 11): the attack table fits a 1,400 px window, one ROC
plot holds every attack's curve, and "What to do" shows remedies for the model's own family."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from privaudit.report import render
from privaudit.report.schema import Report
from tests.test_report_html import chromium_binary, page, parse, report, run_chromium  # noqa: F401  (fixtures)

pytestmark = pytest.mark.slow


def test_one_roc_plot_holds_every_attack(report: Report, page: str) -> None:  # noqa: F811
    p = parse(page)
    rocs = [f for f in p.figures if f["data-plot"] == "roc"]
    assert len(rocs) == 1
    assert rocs[0]["data-attack"].split(",") == [a.name for a in report.membership.attacks]
    alt = next(i["alt"] for i in p.imgs if "ROC" in i.get("alt", ""))
    for a in report.membership.attacks:
        assert a.name in alt


_PROBE = """<script>
window.addEventListener("load", () => {
  const box = document.querySelector("#attacks .scroll");
  const table = box.querySelector("table");
  document.body.setAttribute("data-probe", [box.clientWidth, table.scrollWidth, box.scrollWidth].join(","));
});
</script>"""


def test_attack_table_fits_a_1400px_window(page: str, tmp_path: Path) -> None:  # noqa: F811
    probed = re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", page).replace("</body>", _PROBE + "</body>")
    path = tmp_path / "probe.html"
    path.write_text(probed, encoding="utf-8")
    dom = run_chromium(chromium_binary(), tmp_path / "profile", "--window-size=1400,1000", "--virtual-time-budget=3000",
                       "--dump-dom", path.as_uri())
    found = re.search(r'data-probe="(\d+),(\d+),(\d+)"', dom)
    assert found, "the probe did not run"
    box, table, scroll = map(int, found.groups())
    assert table <= box and scroll <= box, f"the attack table is {table}px wide in a {box}px box"


def test_what_to_do_fits_the_model_family(report: Report) -> None:  # noqa: F811
    assert report.model.format == "sklearn"
    sklearn_page = render(report, "r.html").lower()
    assert "opacus" not in sklearn_page and "privacyengine" not in sklearn_page
    assert "min_samples_leaf" in sklearn_page
    unknown = render(report.model_copy(update={"model": report.model.model_copy(update={"format": "http"})}), "r.html")
    assert "PrivacyEngine" in unknown and "min_samples_leaf" in unknown  # an endpoint could be either
