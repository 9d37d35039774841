import torch

from anomaly.scoring.tiling import tile_starts, tiled_map


def test_tile_starts_cover_the_whole_length():
    assert tile_starts(10, 4, 2) == [0, 2, 4, 6]
    assert tile_starts(11, 4, 3) == [0, 3, 6, 7]
    assert tile_starts(4, 4, 2) == [0] and tile_starts(3, 4, 2) == [0]
    for length, window, stride in [(100, 32, 16), (77, 16, 5)]:
        covered = set()
        for start in tile_starts(length, window, stride):
            covered.update(range(start, start + window))
        assert covered == set(range(length))


def test_pixelwise_maps_stitch_exactly():
    image = torch.rand(1, 70, 45)
    out = tiled_map(image, lambda w: w**2, window=(16, 16), stride=(8, 8), batch_size=5)
    assert out.shape == (1, 70, 45)
    assert torch.allclose(out, image**2, atol=1e-6)


def test_overlaps_are_averaged():
    # Each window reports how many windows were computed before it; the average over the
    # windows covering a pixel is what comes back.
    image = torch.zeros(1, 8, 4)
    calls = []

    def fn(windows):
        start = len(calls)
        calls.extend(range(windows.shape[0]))
        return (
            torch.arange(start, start + windows.shape[0], dtype=torch.float32)
            .view(-1, 1, 1, 1)
            .expand(-1, 1, 4, 4)
        )

    out = tiled_map(image, fn, window=(4, 4), stride=(2, 4), batch_size=2)
    # Windows at rows 0, 2, 4 with values 0, 1, 2: rows 2-3 see windows 0 and 1, etc.
    assert out[0, :, 0].tolist() == [0, 0, 0.5, 0.5, 1.5, 1.5, 2, 2]


def test_images_smaller_than_the_window_are_padded_and_cropped():
    image = torch.rand(3, 5, 7)
    out = tiled_map(image, lambda w: w, window=(16, 16), stride=(8, 8))
    assert out.shape == (3, 5, 7) and torch.allclose(out, image)
