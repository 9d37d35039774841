"""The streaming loop decodes the next batch while the current one is inspected."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from PIL import Image

from anomaly.data.folder import Sample
from anomaly.errors import ImageReadError
from anomaly.scoring.stream import ahead, inspect_batches
from tests.conftest import tiny_draem_detector


def test_ahead_gives_every_item_in_order():
    assert list(ahead(range(7))) == list(range(7))
    assert list(ahead([])) == []


def test_ahead_produces_the_next_item_while_the_current_one_is_used():
    second_started = threading.Event()

    def items():
        yield 0
        second_started.set()
        yield 1

    stream = ahead(items())
    assert next(stream) == 0
    # Without a producer thread the generator would sit at its first yield until asked.
    assert second_started.wait(timeout=10)
    assert next(stream) == 1


def test_ahead_keeps_at_most_one_item_ready():
    produced: list[int] = []

    def items():
        for i in range(100):
            produced.append(i)
            yield i

    stream = ahead(items())
    assert next(stream) == 0
    threading.Event().wait(0.3)  # let the producer run as far as it may
    # Item 1 waits in the queue, item 2 waits to be put; nothing beyond.
    assert len(produced) <= 3
    stream.close()


def test_ahead_reraises_an_error_after_the_items_before_it():
    def items():
        yield "a"
        yield "b"
        raise ImageReadError("broken.png", "corrupt or truncated image data")

    stream = ahead(items())
    assert next(stream) == "a"
    assert next(stream) == "b"
    with pytest.raises(ImageReadError, match="broken.png"):
        next(stream)


def test_closing_early_stops_the_producer():
    def items():
        i = 0
        while True:
            yield i
            i += 1

    before = {t.ident for t in threading.enumerate()}
    stream = ahead(items())
    assert next(stream) == 0
    stream.close()
    left = [t for t in threading.enumerate() if t.ident not in before and t.is_alive()]
    assert not [t for t in left if t.name == "anomaly-decode"]


def _samples(folder, n: int, broken: int | None = None) -> list[Sample]:
    rng = np.random.default_rng(0)
    samples = []
    for i in range(n):
        path = folder / f"img_{i:02d}.png"
        if i == broken:
            path.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
        else:
            Image.fromarray(rng.integers(0, 255, (40, 40), dtype=np.uint8)).save(path)
        samples.append(Sample(path=path, label=0))
    return samples


def test_inspect_batches_streams_every_image_once_in_order(tmp_path):
    detector = tiny_draem_detector()
    samples = _samples(tmp_path, 7)
    indices, maps = [], 0
    for batch, inspected in inspect_batches(detector, samples, batch_size=3):
        indices += list(batch["index"])
        maps += len(inspected.maps)
    assert indices == list(range(7))
    assert maps == 7


def test_a_broken_image_names_itself_through_the_decoding_thread(tmp_path):
    detector = tiny_draem_detector()
    samples = _samples(tmp_path, 6, broken=4)
    seen = []
    with pytest.raises(ImageReadError, match="img_04.png"):
        for batch, _ in inspect_batches(detector, samples, batch_size=2):
            seen += list(batch["index"])
    # The batches before the broken one were inspected and handed over.
    assert seen == [0, 1, 2, 3]
    # Skipping errors, the good images of the broken one's batch still get maps.
    indices, errors = [], []
    for batch, inspected in inspect_batches(detector, samples, batch_size=2, skip_errors=True):
        indices += list(batch["index"])
        errors += [i for i, _ in batch["errors"]]
        assert len(inspected.maps) == len(batch["index"])
    assert indices == [0, 1, 2, 3, 5]
    assert errors == [4]
