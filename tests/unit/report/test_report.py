"""The report page built from a results folder: content, escaping, numbers, pictures."""

import csv
import json
import re
from html.parser import HTMLParser

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix

from anomaly.errors import DataError
from anomaly.report import build_report
from anomaly.report.content import far_bound, load_content
from anomaly.report.page import PAGE_ROWS, json_for_script
from anomaly.report.pictures import histogram_svg
from anomaly.report.words import confusion, method_words, promise_words
from tests.reporting import HOSTILE, scored_folder


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    return scored_folder(tmp_path_factory.mktemp("report"))


class _Collect(HTMLParser):
    """Elements and text of a page as a browser's parser sees them."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag):
        self._in_script = False

    def handle_data(self, data):
        (self.scripts if self._in_script else self.text).append(data)


def _parse(path) -> _Collect:
    parser = _Collect()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def _data(page: _Collect) -> dict:
    return json.loads(next(s for s in page.scripts if s.lstrip().startswith("{")))


def test_rows_follow_scores_csv_highest_first(scored):
    _, out = scored
    with open(out / "scores.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    data = _data(_parse(out / "report.html"))
    assert len(data["rows"]) == len(table) == 21  # 12 good + 8 bad + the hostile name
    scores = [r["score"] for r in data["rows"]]
    assert scores == sorted(scores, reverse=True)
    by_path = {r["path"]: r for r in table}
    for row in data["rows"]:
        assert row["defect"] == int(by_path[row["path"]]["is_defective"])
        assert row["p"] == pytest.approx(float(by_path[row["path"]]["p_value"]))
        assert row["thumb"].startswith("data:image/jpeg;base64,")
        assert len(row["sha"]) == 64


def test_hostile_file_name_is_text_not_markup(scored):
    _, out = scored
    page = _parse(out / "report.html")
    # No element the file name could have made, and its text is there as text.
    assert not any(tag == "img" and "onerror" in attrs for tag, attrs in page.tags)
    assert HOSTILE in "".join(page.text)
    assert any(r["path"] == f"bad/{HOSTILE}" for r in _data(page)["rows"])
    raw = (out / "report.html").read_text(encoding="utf-8")
    assert "<img src=x" not in raw


def test_json_cannot_close_its_script_element():
    text = json_for_script({"path": "</script><script>alert(1)</script>\u2028&"})
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text) == {"path": "</script><script>alert(1)</script>\u2028&"}


def test_header_says_counts_thresholds_and_skips(scored):
    _, out = scored
    text = " ".join(_parse(out / "report.html").text)
    content = load_content(out)
    flagged = sum(r.defective for r in content.rows)
    assert f"{flagged} of 21" in text
    assert "22 files: 21 judged, 1 skipped" in text
    assert "broken.png" in text  # the skipped file with its reason
    assert "the 0.99 quantile of the defect-free validation scores, on 9 validation images" in text
    assert "gray-1" in text


def test_first_page_is_static_html(tmp_path):
    _, out = scored_folder(tmp_path, n_good=PAGE_ROWS + 20, n_bad=3)
    page = _parse(out / "report.html")
    body_rows = [1 for tag, _ in page.tags if tag == "tr"]
    assert len(body_rows) == PAGE_ROWS + 1  # the header row and one page
    assert any(tag == "svg" for tag, _ in page.tags)


def test_far_bound_and_promise_by_hand():
    validation = [0.0, 0.1, 0.2, 0.3, 0.4]
    # Two validation scores exceed 0.25: (1 + 2) / (5 + 1).
    assert far_bound(0.25, validation) == pytest.approx(0.5)
    assert far_bound(1.0, validation) == pytest.approx(1 / 6)
    assert far_bound(0.5, []) is None
    cal = {"far_bound": 1 / 6, "n_images": 5, "min_p_value": 1 / 6}
    words = promise_words({"calibration": cal})
    assert "at most 16.7%" in words and "0.167" in words


def test_method_words():
    ctx = {
        "calibration": {
            "method": "image:far,pixel:mean_std",
            "params": {"image": {"far": 0.01}, "pixel": {"k": 4.0}},
            "n_images": 40,
        }
    }
    image = "a target false-alarm rate of 0.01 (split conformal), on 40 validation images"
    assert method_words(ctx, "image") == image
    pixel = "the validation scores' mean + 4 standard deviations"
    assert method_words(ctx, "pixel").startswith(pixel)
    overridden = method_words({**ctx, "image_threshold_overridden": True}, "image")
    assert overridden.startswith("set on the command line")
    assert "standardised" not in method_words(ctx, "pixel")
    ctx["calibration"]["position_pixels"] = True
    assert "the map is standardised per position" in method_words(ctx, "pixel")
    assert "standardised" not in method_words(ctx, "image")


def test_histogram_bars_match_numpy():
    rng = np.random.default_rng(1)
    scores = rng.normal(size=200)
    svg = histogram_svg(scores, threshold=0.5, bins=10)
    counts = [int(c) for c in re.findall(r"<title>all: (\d+) with score", svg)]
    lo, hi = scores.min(), scores.max()
    expected = np.histogram(scores, bins=np.linspace(lo, hi, 11))[0]
    assert counts == [int(c) for c in expected if c]
    assert "threshold 0.5" in svg


def test_confusion_counts_against_sklearn(tmp_path):
    _, out = scored_folder(tmp_path)
    content = load_content(out)
    rng = np.random.default_rng(2)
    for row in content.rows:
        row.label = int(rng.integers(0, 2))
    counts = confusion(content)
    tn, fp, fn, tp = confusion_matrix(
        [r.label for r in content.rows], [int(r.defective) for r in content.rows]
    ).ravel()
    assert counts == {"tp": tp, "fp": fp, "tn": tn, "fn": fn}


def test_rebuild_without_model_and_without_context(scored, tmp_path):
    _, out = scored
    first = (out / "report.html").read_text(encoding="utf-8")
    info = build_report(out, output=tmp_path / "again.html")
    again = (tmp_path / "again.html").read_text(encoding="utf-8")
    assert info.n_images == 21 and info.n_thumbnails == 21
    # The same rows; only the relative links differ (the page is elsewhere).
    assert len(re.findall("<tr>", first)) == len(re.findall("<tr>", again))
    (tmp_path / "bare").mkdir()
    for name in ("scores.csv", "summary.json"):
        (tmp_path / "bare" / name).write_bytes((out / name).read_bytes())
    bare = build_report(tmp_path / "bare")
    assert bare.n_images == 21 and bare.n_thumbnails == 0  # no pictures, no originals


def test_zero_images_and_missing_table(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "scores.csv").write_text("path,score,p_value,threshold,is_defective\n")
    info = build_report(tmp_path / "empty")
    assert info.n_images == 0
    assert "No image was judged" in (tmp_path / "empty" / "report.html").read_text()
    (tmp_path / "nothing").mkdir()
    with pytest.raises(DataError, match="scores.csv is missing"):
        build_report(tmp_path / "nothing")


def test_thumbnail_limit_keeps_the_highest_scores(scored, tmp_path):
    _, out = scored
    build_report(out, output=tmp_path / "few.html", max_thumbnails=3)
    rows = _data(_parse(tmp_path / "few.html"))["rows"]
    assert [bool(r["thumb"]) for r in rows] == [True] * 3 + [False] * 18


def test_all_images_unreadable(tmp_path):
    from anomaly.scoring.results import score_folder
    from tests.reporting import gray_detector

    (tmp_path / "in").mkdir()
    for name in ("a.png", "b.jpg"):
        (tmp_path / "in" / name).write_bytes(b"broken")
    score_folder(gray_detector(), tmp_path / "in", tmp_path / "out")
    info = build_report(tmp_path / "out")
    page = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert info.n_images == 0
    assert "2 files: 0 judged, 2 skipped" in page and "No image was judged" in page
    assert "a.png" in page and "b.jpg" in page


def test_labels_without_masks_show_class_confusion_and_roc(tmp_path):
    from tests.reporting import table_folder

    folder = table_folder(tmp_path / "eval", 300, labels=True)
    build_report(folder)
    page = _parse(folder / "report.html")
    text = " ".join(page.text)
    assert "true class" in text and "defects caught" in text
    assert any(tag == "svg" and "roc" in attrs.get("class", "") for tag, attrs in page.tags)
    rows = _data(page)["rows"]
    assert {r["cls"] for r in rows} == {"crack", "good"} and all(r["nr"] is None for r in rows)


def test_rebuild_adds_the_review_beside_it(tmp_path):
    _, out = scored_folder(tmp_path)
    flagged = [r for r in load_content(out).rows if r.defective]
    decisions = ["defect_confirmed", "false_alarm"]
    review = "path,decision,model_verdict\n" + "".join(
        f"{r.path},{d},defect\n" for r, d in zip(flagged[:2], decisions, strict=True)
    )
    (out / "review.csv").write_text(review)
    build_report(out)
    text = " ".join(_parse(out / "report.html").text)
    # 1 confirmed of 2 judged flags; 1 false alarm among the 21 - 1 not confirmed defective.
    assert "2 images reviewed: 1 defects confirmed, 1 false alarms" in text
    assert "Precision of the flags reviewed: 50.0%" in text and "5.00%" in text
    (out / "review.csv").write_text("path,decision\nx.png,maybe\n")  # not a review
    build_report(out)
    assert "Precision of the flags" not in (out / "report.html").read_text()


def test_a_validation_photo_that_stood_out_is_in_the_header(tmp_path):
    _, out = scored_folder(tmp_path)
    assert "look at" not in " ".join(_parse(out / "report.html").text)
    context_file = out / "report_context.json"
    context = json.loads(context_file.read_text())
    assert context["calibration"]["standouts"] == []
    context["calibration"]["standouts"] = [{"path": "train/good/17.png", "score": 7.26}]
    context_file.write_text(json.dumps(context))
    build_report(out)
    text = " ".join(_parse(out / "report.html").text)
    assert "look at" in text
    assert "train/good/17.png (7.26): defect-free validation photo(s) scoring far above" in text
