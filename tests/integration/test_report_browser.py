"""The report as people read it: a real Chromium opens report.html from file://."""

from __future__ import annotations

import csv
import hashlib
import io
from pathlib import Path

import pytest
from mlflow import MlflowClient

from anomaly.report.browser import chromium
from tests.conftest import make_tiny_mvtec
from tests.reporting import HOSTILE, gray_detector, make_images, scored_folder


@pytest.fixture(scope="module")
def browser():
    with chromium() as found:
        yield found


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    source, out = scored_folder(tmp_path_factory.mktemp("browser"))
    return {"source": source, "out": out, "url": (out / "report.html").as_uri()}


class Page:
    """A page with its console errors and dialogs recorded."""

    def __init__(self, browser, url: str, **context) -> None:
        self.context = browser.new_context(accept_downloads=True, **context)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        self.page.goto(url)

    def paths(self) -> list[str]:
        return self.page.locator("#rows tbody tr td:nth-child(2)").all_inner_texts()

    def column(self, n: int) -> list[str]:
        return self.page.locator(f"#rows tbody tr td:nth-child({n})").all_inner_texts()

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def page(browser, report):
    opened = Page(browser, report["url"])
    yield opened
    assert opened.errors == [], opened.errors
    assert opened.dialogs == []  # the hostile file name never ran
    opened.close()


def _scores(out: Path) -> dict[str, float]:
    with open(out / "scores.csv", newline="") as handle:
        return {r["path"]: float(r["score"]) for r in csv.DictReader(handle)}


def test_opens_with_every_scored_image(page, report):
    scores = _scores(report["out"])
    assert "of 21" in page.page.inner_text("#page-info")
    assert sorted(page.paths()) == sorted(scores)
    # Highest scores first.
    assert page.paths()[0] == max(scores, key=scores.get)


def test_sorting_and_filters_change_the_rows(page, report):
    scores = _scores(report["out"])
    page.page.click("th[data-key=score]")  # from descending to ascending
    shown = [scores[p] for p in page.paths()]
    assert shown == sorted(shown)
    page.page.select_option("#f-verdict", "good")
    assert set(page.column(5)) == {"good"}
    n_good = sum(1 for s in scores.values() if s <= 0.1)
    assert len(page.paths()) == n_good
    page.page.select_option("#f-verdict", "")
    page.page.select_option("#f-folder", "bad")
    assert all(p.startswith("bad/") for p in page.paths()) and len(page.paths()) == 9
    page.page.fill("#f-text", "b0")
    assert sorted(page.paths()) == sorted(p for p in scores if p.startswith("bad/b0"))


def test_hostile_name_is_shown_as_text(page):
    page.page.fill("#f-text", "onerror")
    assert page.paths() == [f"bad/{HOSTILE}"]
    assert page.page.locator("img[onerror]").count() == 0


def test_detail_view_and_arrow_keys(page):
    first, second = page.paths()[:2]
    page.page.locator("#rows tbody tr").first.click()
    assert page.page.is_visible("#detail")
    assert page.page.inner_text("#d-title") == first
    # Full-size pictures from the folders beside the report, with the region boxes.
    sources = page.page.locator("#d-panes img").evaluate_all("els => els.map(e => e.src)")
    assert any("/overlays/" in s for s in sources) and any("/heatmaps/" in s for s in sources)
    assert page.page.locator("#d-panes svg.boxes rect").count() >= 1
    page.page.keyboard.press("ArrowRight")
    assert page.page.inner_text("#d-title") == second
    page.page.keyboard.press("ArrowLeft")
    assert page.page.inner_text("#d-title") == first
    page.page.keyboard.press("Escape")
    assert not page.page.is_visible("#detail")


def _export(page: Page) -> list[dict[str, str]]:
    with page.page.expect_download() as download:
        page.page.click("#export")
    text = Path(download.value.path()).read_text(encoding="utf-8")
    return list(csv.DictReader(io.StringIO(text)))


def test_review_survives_a_reload_and_exports(browser, report):
    page = Page(browser, report["url"])
    first, second = page.paths()[:2]
    page.page.locator("#rows tbody tr").first.click()
    page.page.keyboard.press("d")
    page.page.keyboard.press("n")
    page.page.keyboard.type("scratch, left edge")
    page.page.keyboard.press("Enter")
    page.page.keyboard.press("ArrowRight")
    page.page.keyboard.press("f")
    page.page.keyboard.press("Escape")
    page.page.reload()  # local storage keeps the review
    assert "2 reviewed" in page.page.inner_text("#review-count")
    rows = {r["path"]: r for r in _export(page)}
    assert set(rows) == {first, second}
    assert rows[first]["decision"] == "defect_confirmed"
    assert rows[first]["note"] == "scratch, left edge"
    assert rows[second]["decision"] == "false_alarm"
    for path, row in rows.items():
        original = report["source"] / path
        assert row["source"] == str(original)
        assert row["sha256"] == hashlib.sha256(original.read_bytes()).hexdigest()
        assert row["model_verdict"] == "defect" and row["model_id"] == "gray-1"
        assert row["report_images"] == "21"
    assert page.errors == []
    page.close()


def test_readable_with_scripts_off(browser, report):
    page = Page(browser, report["url"], java_script_enabled=False)
    assert "flagged" in page.page.inner_text("header")
    assert page.page.is_visible("svg.hist")
    assert len(page.paths()) == 21  # the first page, as rendered
    assert page.page.is_hidden(".controls")
    scores = _scores(report["out"])
    assert page.paths()[0] == max(scores, key=scores.get)
    page.close()


def test_review_apply_then_training_learns_it(browser, cli, tmp_path):
    """review -> apply -> train: the false alarm is trained on, the defect is tested on."""
    batch = make_images(tmp_path / "batch", n_good=3, n_bad=2)
    out = tmp_path / "scored"
    from anomaly.jobs.report import write_report
    from anomaly.report.context import report_context
    from anomaly.scoring.results import score_folder

    detector = gray_detector()
    score_folder(detector, batch, out)
    write_report(out, report_context(detector, kind="score", model="gray", input_dir=batch))
    page = Page(browser, (out / "report.html").as_uri())
    page.page.fill("#f-text", "bad/b01")
    page.page.locator("#rows tbody tr").first.click()
    page.page.fill("#d-class", "spot")
    page.page.keyboard.press("Escape")  # leaves the class field
    page.page.keyboard.press("d")
    page.page.keyboard.press("Escape")
    page.page.fill("#f-text", "bad/b00")
    page.page.locator("#rows tbody tr").first.click()
    page.page.keyboard.press("f")
    review = tmp_path / "review.csv"
    with page.page.expect_download() as download:
        page.page.keyboard.press("Escape")
        page.page.click("#export")
    download.value.save_as(review)
    page.close()

    root = make_tiny_mvtec(tmp_path / "part")
    applied = cli("review", "apply", f"review={review}", f"data.root={root}", cwd=tmp_path)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "copied 1 false alarm(s) into training and 1 confirmed defect(s)" in applied.stdout
    again = cli("review", "apply", f"review={review}", f"data.root={root}", cwd=tmp_path)
    assert "copied 0 false alarm(s)" in again.stdout and "2 already there" in again.stdout

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    trained = cli(
        "train",
        f"data.root={root}",
        "model=draem",
        "data.image_size=32",
        "data.val_fraction=0.25",
        "trainer.max_steps=2",
        "trainer.progress_bar=false",
        f"tracking.uri={uri}",
        f"output_dir={tmp_path / 'train'}",
        cwd=tmp_path,
    )
    assert trained.returncode == 0, trained.stdout + trained.stderr
    (run,) = MlflowClient(uri).search_runs(
        [MlflowClient(uri).get_experiment_by_name("anomaly").experiment_id]
    )
    params = run.data.params
    assert int(params["data.n_train"]) + int(params["data.n_val"]) == 13  # 12 + the false alarm
    with open(tmp_path / "train" / "evaluation" / "scores.csv", newline="") as handle:
        tested = {r["path"]: r for r in csv.DictReader(handle)}
    confirmed = root / "test" / "spot" / "reviewed" / "bad__b01.png"
    assert tested[str(confirmed)]["label"] == "1"
    assert (tmp_path / "train" / "evaluation" / "report.html").is_file()


def test_ten_thousand_rows_page_and_filter(browser, tmp_path):
    from anomaly.report import build_report
    from tests.reporting import table_folder

    folder = table_folder(tmp_path / "big", 10_000)
    build_report(folder)
    page = Page(browser, (folder / "report.html").as_uri())
    assert "of 10000" in page.page.inner_text("#page-info")
    assert page.page.locator("#rows tbody tr").count() == 100  # one page drawn, not 10 000
    page.page.click("#next-page")
    assert "rows 101–200 of 10000" in page.page.inner_text("#page-info")
    page.page.select_option("#f-folder", "line3")
    assert all(p.startswith("line3/") for p in page.paths())
    assert f"of {len(range(3, 10_000, 7))}" in page.page.inner_text("#page-info")
    assert page.errors == []
    page.close()


def test_in_the_mlflow_ui_and_from_a_static_server(browser, report, shared_mlflow_server):
    """The artifact as reviewers open it in the MLflow UI, and the folder served as files."""
    import functools
    import http.server
    import threading

    import mlflow

    from tests.integration.conftest import free_port

    client = MlflowClient(shared_mlflow_server)
    experiment = client.create_experiment("report-preview")
    run = client.create_run(experiment)
    client.log_artifact(run.info.run_id, str(report["out"] / "report.html"))
    client.set_terminated(run.info.run_id)
    mlflow.set_tracking_uri(None)
    page = Page(
        browser,
        f"{shared_mlflow_server}/#/experiments/{experiment}/runs/{run.info.run_id}"
        "/artifacts/report.html",
    )
    # The UI shows the page in a sandboxed frame (no storage there: the review still works
    # for the visit, the script says nothing).
    frame = page.page.frame_locator("iframe")
    frame.locator("h1").wait_for(timeout=60_000)
    assert "Inspection report" in frame.locator("h1").inner_text()
    assert frame.locator("#rows tbody tr").count() == 21
    assert "of 21" in frame.locator("#page-info").inner_text()
    page.close()

    handler = functools.partial(
        http.server.SimpleHTTPRequestHandler, directory=str(report["out"].parent)
    )
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{report['out'].name}/report.html"
        page = Page(browser, url)
        page.page.locator("#rows tbody tr").first.click()
        overlay = page.page.locator("#d-panes img").nth(2)
        overlay.wait_for()
        page.page.wait_for_function(
            "[...document.querySelectorAll('#d-panes img')].every(i => i.complete)"
        )
        widths = page.page.locator("#d-panes img").evaluate_all(
            "els => els.map(e => e.naturalWidth)"
        )
        assert widths == [32, 32, 32]  # original, heat map and overlay, each served
        assert page.errors == []
        page.close()
    finally:
        server.shutdown()
