"""Tests for aetool.report.html, sections and data: the self-contained HTML report."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

from aetool.errors import OutputError
from aetool.report.data import ExtremeItem, ReportData
from aetool.report.html import render_html, write_report

SECTIONS = ("model", "reconstructions", "scores", "extremes", "latent")
NASTY_PATH = 'data/<b>bad</b> & "quoted".png'


class _Page(HTMLParser):
    """Collects element ids and every URL-bearing attribute of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.urls: list[tuple[str, str, str]] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        for name, value in attrs:
            if name == "id" and value:
                self.ids.add(value)
            if name in ("src", "href", "srcset", "action", "poster", "data"):
                self.urls.append((tag, name, value or ""))


def _parse(page: str) -> _Page:
    parser = _Page()
    parser.feed(page)
    return parser


def _metadata() -> dict:
    return {
        "format": "aetool-model",
        "format_version": 1,
        "arch": "conv",
        "arch_args": {"latent_dim": 4},
        "preprocessing": {"channels": 1, "height": 8, "width": 8, "resize": "stretch"},
        "training": {
            "data": "/data/<digits>",
            "epochs_run": 3,
            "best_epoch": 3,
            "skipped": [{"path": "a<b>.png", "reason": "not an image"}],
            "history": {"train_loss": [0.3, 0.2, 0.1], "val_loss": [0.35, 0.25, 0.15]},
        },
        "validation": {"count": 20, "scores": {"mse": sorted(np.linspace(0.01, 0.05, 20))}},
    }


def _data(labels: bool = True, n: int = 40) -> ReportData:
    rng = np.random.default_rng(0)
    x = rng.random((n, 1, 8, 8)).astype(np.float32)
    recon = np.clip(x + rng.normal(0, 0.05, x.shape), 0, 1).astype(np.float32)
    err = ((x - recon) ** 2)[:, 0]
    y = [int(i % 4 == 0) for i in range(n)]
    scores = err.mean(axis=(1, 2)) + np.array(y) * 0.05
    paths = [f"img_{i}.png" for i in range(n)]
    paths[int(np.argmax(scores))] = NASTY_PATH
    order = np.argsort(-scores)

    def item(i: int) -> ExtremeItem:
        return ExtremeItem(paths[i], float(scores[i]), x[i], err[i], y[i] if labels else None)

    return ReportData(
        metadata=_metadata(),
        model_path="model <v1>.safetensors",
        inputs=x[:6],
        recons=recon[:6],
        scores=scores,
        labels=y if labels else None,
        paths=paths,
        threshold=float(np.quantile(scores, 0.8)),
        threshold_rule="p99 & friends",
        score_kind="mse",
        top_anomalous=[item(i) for i in order[:4]],
        top_normal=[item(i) for i in order[::-1][:4]],
        latent_codes=rng.normal(size=(n, 4)),
        latent_labels=y if labels else None,
        metrics={"f1": 0.5, "confusion": {"tn": 1, "fp": 2, "fn": 3, "tp": 4}} if labels else None,
    )


def _embedded_pngs(page: str) -> list[Image.Image]:
    images = []
    for _tag, _attr, url in _parse(page).urls:
        if url.startswith("data:"):
            assert url.startswith("data:image/png;base64,")
            raw = base64.b64decode(url.split(",", 1)[1], validate=True)
            img = Image.open(io.BytesIO(raw))
            assert img.format == "PNG"
            img.load()
            images.append(img)
    return images


def _assert_self_contained(page: str) -> None:
    parsed = _parse(page)
    for tag, attr, url in parsed.urls:
        # Only embedded images and in-page anchors: nothing to fetch.
        assert url.startswith("data:image/png;base64,") or re.fullmatch(r"#[\w-]+", url), (
            tag,
            attr,
            url[:80],
        )
    assert "script" not in parsed.tags and "link" not in parsed.tags and "iframe" not in parsed.tags
    assert "http://" not in page and "https://" not in page and "url(" not in page
    assert "@import" not in page


def test_report_has_every_section_and_is_self_contained():
    page = render_html(_data())
    parsed = _parse(page)
    assert set(SECTIONS) <= parsed.ids
    _assert_self_contained(page)
    images = _embedded_pngs(page)
    # loss, reconstructions, histogram, roc/pr, latent, one panel per extreme card x 8
    assert len(images) == 5 + 8
    assert all(img.width > 10 and img.height > 10 for img in images)
    assert "ROC AUC" in page and "Not available" not in page


def test_report_sections_link_to_themselves():
    parsed = _parse(render_html(_data()))
    anchors = {url[1:] for _tag, attr, url in parsed.urls if attr == "href"}
    assert anchors == set(SECTIONS)


def test_report_escapes_paths_and_strings():
    page = render_html(_data())
    assert "<b>bad</b>" not in page and "a<b>.png" not in page and "<digits>" not in page
    # Paths may break after a separator only, never inside a name.
    assert "data/<wbr>&lt;b&gt;bad&lt;/<wbr>b&gt; &amp; &quot;quoted&quot;.png" in page
    assert "model &lt;v1&gt;.safetensors" in page
    assert "p99 &amp; friends" in page
    assert "b" not in _parse(page).tags


def test_report_without_labels_omits_roc_and_says_so():
    page = render_html(_data(labels=False))
    assert set(SECTIONS) <= _parse(page).ids
    _assert_self_contained(page)
    assert "ROC AUC" not in page
    assert "no labels are known" in page
    assert "validation" in page  # histogram of scored vs validation
    assert len(_embedded_pngs(page)) == 4 + 8  # no ROC/PR image


def test_report_with_one_class_of_labels_explains_missing_roc():
    data = _data()
    data.labels = [0] * len(data.labels or [])
    page = render_html(data)
    assert "need both normal and anomalous" in page


def test_empty_report_says_not_available_everywhere():
    page = render_html(ReportData())
    parsed = _parse(page)
    assert set(SECTIONS) <= parsed.ids
    _assert_self_contained(page)
    assert page.count("Not available") >= len(SECTIONS)
    assert _embedded_pngs(page) == []


def test_report_tolerates_partial_metadata():
    data = ReportData(metadata={"arch": "dense", "training": {"history": {"train_loss": [1.0]}}})
    page = render_html(data)
    assert "dense" in page and len(_embedded_pngs(page)) == 1  # the loss curve


def test_write_report_writes_html_and_pngs(tmp_path):
    out = tmp_path / "out" / "report.html"
    written = write_report(_data(), out, png_dir=tmp_path / "png")
    assert written[0] == out and out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    names = {p.name for p in written[1:]}
    assert names == {
        "loss_curve.png",
        "reconstructions.png",
        "score_histogram.png",
        "roc_pr.png",
        "latent_map.png",
        "top_anomalous.png",
        "top_normal.png",
    }
    for p in written[1:]:
        img = Image.open(p)
        assert img.format == "PNG" and img.width > 10 and img.height > 10
    assert not list(tmp_path.rglob("*.tmp"))


def test_report_rejects_mismatched_labels():
    data = _data()
    data.labels = [0, 1]
    with pytest.raises(ValueError, match="labels"):
        render_html(data)


def test_write_report_refuses_a_folder(tmp_path):
    with pytest.raises(OutputError):
        write_report(ReportData(), tmp_path)


def test_report_renders_in_chromium(tmp_path):
    exe = shutil.which("chromium")
    if exe is None:
        pytest.skip("chromium is not installed (Debian package: chromium)")
    html = tmp_path / "report.html"
    write_report(_data(), html)
    shot = tmp_path / "out.png"
    try:
        subprocess.run(
            [
                exe,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--hide-scrollbars",
                f"--user-data-dir={tmp_path / 'profile'}",
                "--window-size=1280,2400",
                f"--screenshot={shot}",
                html.as_uri(),
            ],
            check=True,
            timeout=90,
            capture_output=True,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("chromium did not finish rendering within 90 s")
    assert shot.exists()
    img = Image.open(shot)
    assert img.size == (1280, 2400)
    gray = np.asarray(img.convert("L"), dtype=np.float64)
    assert gray.std() > 10, "screenshot is blank"
    # The dark header band is drawn at the top: the page's CSS was applied.
    assert gray[:40].mean() < 100
