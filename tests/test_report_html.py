"""The HTML report: self-contained, escaped, verdict first, one ROC plot of every attack, and it renders in
a real browser (headless Chromium) the way a reader would open it."""

from __future__ import annotations

import base64
import os
import re
import signal
import subprocess
import sys
import warnings
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import privaudit
from privaudit import datasets
from privaudit.report import WriteOptions, render, writer_for
from privaudit.report.html import remediation_blocks
from privaudit.report.schema import Regression, Report
from tests.conftest import require_program

pytestmark = pytest.mark.slow  # one real audit (about ten seconds) feeds every test here

ROOT = Path(__file__).resolve().parents[1]
EVIL = '<script>alert("pwned")</script>'
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--hide-scrollbars")
CHROMIUM_TIMEOUT = 60.0
# Attributes that make a browser fetch or navigate somewhere.
URL_ATTRS = {"src", "href", "srcset", "action", "formaction", "poster", "data", "background", "cite", "longdesc",
             "manifest", "ping", "codebase", "usemap", "xlink:href", "icon", "archive", "profile"}
FORBIDDEN_TAGS = {"script", "link", "iframe", "frame", "object", "embed", "base", "form", "audio", "video", "source",
                  "track", "applet", "portal"}


# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def report() -> Report:
    from sklearn.ensemble import RandomForestClassifier

    # A forest fits every training patient of the noisy hospital table: a leak the verdict proves.
    split = datasets.readmission_like(1600)
    model = RandomForestClassifier(n_estimators=30, random_state=0).fit(split.X_train, split.y_train)
    return privaudit.audit(model, (split.X_train, split.y_train), (split.X_holdout, split.y_holdout),
                           reference_models=2, cache_dir=False, n_bootstrap=0)


@pytest.fixture(scope="module")
def page(report: Report) -> str:
    return render(report, "report.html")


@pytest.fixture(scope="module")
def page_file(page: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("html") / "report.html"
    path.write_text(page, encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------- parsing


class _Page(HTMLParser):
    """Tags, URL-bearing attributes, inline CSS and plot figures of a page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.refs: list[tuple[str, str, str]] = []  # (tag, attribute, value)
        self.attr_names: list[str] = []
        self.css: list[str] = []
        self.figures: list[dict[str, str]] = []
        self.imgs: list[dict[str, str]] = []
        self.text: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        a = {k: v or "" for k, v in attrs}
        for k, v in a.items():
            self.attr_names.append(k)
            if k in URL_ATTRS:
                self.refs.append((tag, k, v))
            if k == "style":
                self.css.append(v)
        if tag == "figure" and "data-plot" in a:
            self.figures.append(a)
        if tag == "img":
            self.imgs.append(a)
        self._in_style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        if tag == "style":
            self._in_style = False

    def handle_data(self, data: str) -> None:
        (self.css if self._in_style else self.text).append(data)


def parse(text: str) -> _Page:
    p = _Page()
    p.feed(text)
    p.close()
    return p


def _is_local(attr: str, value: str) -> bool:
    """Only data: URIs, and (for links) anchors within the page."""
    v = value.strip().lower()
    return v.startswith("data:") or (attr in ("href", "xlink:href") and v.startswith("#"))


def _css_urls(css: str) -> list[str]:
    return [u.strip().strip("'\"") for u in re.findall(r"url\(\s*([^)]*)\)", css, flags=re.I)]


def _svgs(page: _Page) -> list[str]:
    prefix = "data:image/svg+xml;base64,"
    return [base64.b64decode(v[len(prefix):]).decode("utf-8") for _t, k, v in page.refs
            if k == "src" and v.startswith(prefix)]


def external_references(text: str) -> list[str]:
    """Everything in the page (and in the SVGs it embeds) that would reach outside the file."""
    p = parse(text)
    bad = [f"<{t} {k}={v[:80]!r}>" for t, k, v in p.refs if not _is_local(k, v)]
    bad += [f"<{t}>" for t in p.tags if t in FORBIDDEN_TAGS]
    bad += [f"css url({u[:80]})" for css in p.css for u in _css_urls(css) if not (u.startswith("#") or u.startswith("data:"))]
    bad += ["css @import" for css in p.css if "@import" in css.lower()]
    bad += [f"event handler {a}" for a in p.attr_names if a.startswith("on")]
    for svg in _svgs(p):
        bad += [f"svg href {h}" for h in re.findall(r'href="([^"]*)"', svg) if not h.startswith("#")]
        bad += [f"svg url({u})" for u in _css_urls(svg) if not u.startswith("#")]
        bad += ["svg <script>" for _ in re.findall(r"<script", svg, flags=re.I)]
        bad += ["svg <image>" for _ in re.findall(r"<image\b", svg, flags=re.I)]
    return bad


def test_the_reference_checker_catches_external_references() -> None:
    # A checker that never fails proves nothing: feed it every kind of leak it must find.
    leaky = ('<html><head><link rel="stylesheet" href="https://cdn.example/x.css"><style>body{background:url(//x/y.png)}'
             '@import "a.css";</style></head><body><img src="http://x/a.png"><img src="/local.png">'
             '<a href="https://example.org">x</a><a href="#ok">fine</a><div style="background:url(\'img.png\')"></div>'
             '<img src="data:image/png;base64,AAAA" onerror="alert(1)"></body></html>')
    found = "\n".join(external_references(leaky))
    for needle in ("<link", "cdn.example", "//x/y.png", "@import", "http://x/a.png", "/local.png",
                   "https://example.org", "img.png", "onerror"):
        assert needle in found, (needle, found)
    assert "#ok" not in found and "data:image/png" not in found


# --------------------------------------------------------------------------------------- the page


def test_registered_for_html_and_htm() -> None:
    assert writer_for("out/report.html")[0] == "html"
    assert writer_for("REPORT.HTM")[0] == "html"


def test_page_is_self_contained(page: str) -> None:
    assert external_references(page) == []
    p = parse(page)
    assert p.refs, "the page has plots and in-page links, so it must have references to check"
    assert all(v.startswith("data:image/svg+xml;base64,") for t, k, v in p.refs if t == "img")
    # The page also tells the browser to refuse anything else.
    assert "Content-Security-Policy" in page and "default-src 'none'" in page


def test_verdict_comes_first_in_plain_language(report: Report, page: str) -> None:
    assert report.findings and any(f.failed for f in report.findings), "the demo model is expected to leak"
    verdict = page.index('id="verdict"')
    headline = page.index("An attacker can tell who was in the training data.")
    findings = page.index('id="findings"')
    first_finding = page.index('class="finding"')
    assert verdict < headline < findings < first_finding
    worst = max((f.severity for f in report.findings if f.failed), key=lambda s: s.rank)
    badge = f'<span class="badge sev-{worst.value}">{worst.value.upper()}</span>'
    assert verdict < page.index(badge) < findings
    # Each check carries its status badge and evidence; remediation code is preformatted.
    for f in report.findings:
        for c in f.checks:
            assert f'badge st-{c.status.value.lower()}">{c.status.value}<' in page
    # (the demo's MLP is a scikit-learn model: its remedy is scikit-learn's, not PyTorch's)
    assert "<pre><code># scikit-learn has no DP-SGD" in page


def test_sections_follow_in_reading_order(page: str) -> None:
    ids = ["verdict", "findings", "attacks", "roc", "histogram", "per-class", "records", "what-if", "questions",
           "provenance"]
    positions = [page.index(f'id="{i}"') for i in ids]
    assert positions == sorted(positions)


def test_regressions_come_before_the_findings(report: Report) -> None:
    regressed = report.model_copy(update={"regressions": [Regression(
        kind="attack_power", id="ATLAS-EXF-003/model", message="strongest attack AUC rose", before=0.55, after=0.59)]})
    html = render(regressed, "r.html")
    assert html.index('id="verdict"') < html.index('id="regressions"') < html.index('id="findings"')
    assert "strongest attack AUC rose" in html and "1 regression since the baseline" in html


def test_no_failure_says_no_membership_signal(report: Report) -> None:
    passing = [f.model_copy(update={"status": "pass"}) for f in report.findings]
    html = render(report.model_copy(update={"findings": passing}), "r.html")
    section = html[html.index('id="verdict"'):html.index('id="findings"')]
    assert "No membership signal found." in section
    assert "An attacker can tell" not in html
    assert "sev-" not in section  # no severity badge when nothing failed

    # With no rule evaluated at all there is no verdict to give, only numbers.
    bare = render(report.model_copy(update={"findings": []}), "r.html")
    section = bare[bare.index('id="verdict"'):bare.index('id="findings"')]
    assert "no rule judged the results" in section and "No membership signal" not in section


def test_ids_are_unique_and_every_anchor_resolves(page: str) -> None:
    ids = re.findall(r'\sid="([^"]+)"', page)
    assert len(ids) == len(set(ids))
    anchors = [v[1:] for _t, k, v in parse(page).refs if k == "href"]
    assert anchors and set(anchors) <= set(ids)


def test_one_roc_plot_then_histogram_and_per_class(report: Report, page: str) -> None:
    p = parse(page)
    rocs = [f["data-attack"] for f in p.figures if f["data-plot"] == "roc"]
    assert rocs == [",".join(a.name for a in report.membership.attacks)]  # every curve in one plot
    assert [f["data-attack"] for f in p.figures if f["data-plot"] == "histogram"] == [report.membership.best]
    assert [f["data-attack"] for f in p.figures if f["data-plot"] == "per_class"] == [report.membership.best]
    assert all(i.get("alt", "").strip() for i in p.imgs), "every plot needs alt text"
    svgs = _svgs(p)
    assert len(svgs) == len(p.figures)
    assert f"<title>ROC curves: {', '.join(a.name for a in report.membership.attacks)}</title>" in svgs[0]


def test_plots_survive_zero_points_and_missing_curves(report: Report) -> None:
    attacks = list(report.membership.attacks)
    zero = attacks[0].model_copy(update={"roc": attacks[0].roc.model_copy(update={"tpr": [0.0] * len(attacks[0].roc.tpr)})})
    gone = attacks[1].model_copy(update={"roc": None, "histogram": None})
    membership = report.membership.model_copy(update={"attacks": [zero, gone, *attacks[2:]]})
    html = render(report.model_copy(update={"membership": membership}), "r.html")  # warnings are errors here
    rocs = [f["data-attack"] for f in parse(html).figures if f["data-plot"] == "roc"]
    assert rocs == [",".join([zero.name] + [a.name for a in attacks[2:]])]
    assert f"No curve recorded for: {gone.name}." in html


def test_everything_is_escaped(report: Report) -> None:
    m = report.membership
    best = next(a for a in m.attacks if a.name == m.best)
    odd_classes = [c.model_copy(update={"class_": f"$<b>{c.class_}</b>$"}) for c in best.per_class]
    attacks = [a.model_copy(update={"per_class": odd_classes}) if a is best else a for a in m.attacks]
    evil = report.model_copy(update={
        "model_name": EVIL,
        "warnings": [f"warning {EVIL}"],
        "findings": [f.model_copy(update={"model_name": EVIL, "summary": f.summary + ' <img src=x onerror="alert(1)">'})
                     for f in report.findings],
        "membership": m.model_copy(update={"attacks": attacks}),
    })
    html = render(evil, "evil.html")
    assert EVIL not in html and "<img src=x" not in html and "<b>" not in html
    assert "&lt;script&gt;alert(&#34;pwned&#34;)&lt;/script&gt;" in html
    assert "script" not in parse(html).tags
    assert external_references(html) == []
    assert "<title>Privacy audit: &lt;script&gt;" in html


def test_remediation_splits_prose_and_code() -> None:
    blocks = remediation_blocks("Do a; do b (x; y); do c.\n\nExample:\nline 1\n  line 2\n\nOne more sentence.")
    assert blocks == [
        {"kind": "list", "items": ["Do a", "Do b (x; y)", "Do c."]},
        {"kind": "code", "label": "Example", "code": "line 1\n  line 2"},
        {"kind": "text", "text": "One more sentence."},
    ]


def test_records_show_index_and_hash_only(report: Report, page: str) -> None:
    top = report.membership.records_at_risk[0]
    assert top.row_sha256 in page
    assert f'<td class="num">{top.index}</td>' in page
    assert "the values themselves are not in this report" in page
    # include_records asks for raw values the report does not carry: the page stays the same.
    assert render(report, "r.html", WriteOptions(include_records=True)) == page


def test_rendering_is_deterministic_and_leaves_matplotlib_alone(report: Report, page: str) -> None:
    import matplotlib

    before = dict(matplotlib.rcParams)
    backend = matplotlib.get_backend()
    again = render(report, "again.html")
    assert again == page
    assert dict(matplotlib.rcParams) == before
    assert matplotlib.get_backend() == backend


def test_rendering_does_not_import_pyplot(tmp_path: Path, report: Report) -> None:
    path = tmp_path / "r.json"
    report.to_json(str(path))
    code = ("import sys; from privaudit.report import Report, render; "
            f"render(Report.from_json(open({str(path)!r}).read()), 'x.html'); "
            "print('matplotlib.pyplot' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------------------------------- Chromium


def chromium_binary() -> str:
    return require_program("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", package="chromium")


def test_a_missing_program_fails_the_test_instead_of_skipping_it() -> None:
    with pytest.raises(pytest.fail.Exception, match="no-such-browser is not on PATH.*apt-get install -y no-such-pkg"):
        require_program("no-such-browser", package="no-such-pkg")


def run_chromium(binary: str, profile: Path, *args: str) -> str:
    """Run headless Chromium; return stdout. Fails with its stderr on error or after 60 s."""
    cmd = [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=CHROMIUM_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the wrapper script and the browser it started
        _out, err = proc.communicate()
        pytest.fail(f"chromium timed out after {CHROMIUM_TIMEOUT:.0f}s: {' '.join(cmd)}\n{err[-4000:]}")
    if proc.returncode != 0:
        pytest.fail(f"chromium exited {proc.returncode}: {' '.join(cmd)}\n{err[-4000:]}")
    return out


def read_png(path: Path) -> Any:
    import matplotlib.image

    assert path.is_file(), f"no screenshot at {path}"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG file"
    return matplotlib.image.imread(str(path))[..., :3]


def test_renders_in_headless_chromium(report: Report, page_file: Path, tmp_path: Path) -> None:
    chromium = chromium_binary()
    png = tmp_path / "shot.png"
    run_chromium(chromium, tmp_path / "profile-shot", f"--screenshot={png}", "--window-size=1280,2400",
                 page_file.as_uri())
    rgb = read_png(png)
    assert rgb.shape[:2] == (2400, 1280)
    assert float(rgb.std()) > 0.05, "the screenshot is blank"
    assert float((rgb.mean(axis=-1) < 0.9).mean()) > 0.02, "almost nothing drawn on the screenshot"
    # The verdict box (red edge: a failing verdict) is on screen without scrolling.
    red = (rgb[..., 0] > 0.6) & (rgb[..., 1] < 0.25) & (rgb[..., 2] < 0.25)
    assert int(red.sum()) > 1000

    dom = run_chromium(chromium, tmp_path / "profile-dom", "--dump-dom", page_file.as_uri())
    p = parse(dom)
    text = " ".join(" ".join(p.text).split())
    assert "An attacker can tell who was in the training data." in text
    plots = [i for i in p.imgs if i.get("src", "").startswith("data:image/svg+xml")]
    assert len(plots) == 3  # one ROC plot of every attack, histogram, per-class
    assert len(p.figures) == len(plots)
    assert "script" not in p.tags


def test_plots_are_drawn_by_the_browser(page_file: Path, tmp_path: Path) -> None:
    # Headless screenshots show the top of the page only, so use a window tall enough for all of it
    # and look for the plots' own colours: the ROC curves' blue and the members' vermillion.
    chromium = chromium_binary()
    png = tmp_path / "tall.png"
    run_chromium(chromium, tmp_path / "profile-tall", f"--screenshot={png}", "--window-size=1280,10000",
                 page_file.as_uri())
    rgb = (read_png(png) * 255).astype(np.int16)
    blue = (np.abs(rgb - np.array([0, 114, 178])).max(axis=-1) < 30).sum()
    vermillion = (np.abs(rgb - np.array([213, 94, 0])).max(axis=-1) < 30).sum()
    assert blue > 2000 and vermillion > 2000, (int(blue), int(vermillion))


def test_screenshot_script(report: Report, tmp_path: Path) -> None:
    chromium = chromium_binary()
    src = tmp_path / "report.json"
    report.to_json(str(src))
    png = tmp_path / "out" / "report.png"
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "screenshot_report.py"), str(png),
                          "--report", str(src), "--chromium", chromium],
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-4000:]
    assert float(read_png(png).std()) > 0.05
    assert (tmp_path / "out" / "report.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
