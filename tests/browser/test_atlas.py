"""The mode atlas's page, written from a tiny model's stores, in a real headless Chromium (selenium) from file://:
from the grid to the strongest head to its first mode, its images loaded, its cosine and scores the stores', its
search and filters."""

# ruff: noqa: F811 (the fixtures tiny and atlas_page are imported from tests.helpers.atlas)
from __future__ import annotations

from pathlib import Path

from qkdissect.stores import open_store
from tests.helpers.atlas import atlas_page, tiny  # noqa: F401 (fixtures)
from tests.helpers.browser import check_atlas, check_search_and_filters


def test_the_atlas_opens_in_a_browser_from_file(atlas_page: Path) -> None:
    """Grid -> the strongest head -> its first mode: the top images load, the cosine and scores are the stores'."""
    clicked = check_atlas(atlas_page)
    assert clicked["model"] == "tiny" and clicked["images"] == 7  # 7 photographs for 8 places
    data = atlas_page.parent / "data/tiny"
    heads = sorted(p.name for p in (data / "heads").iterdir())
    assert len(heads) == 3 * 4 and "L2-H3.js" in heads  # one file per head, loaded on its own
    results = atlas_page.parents[1]
    assert len(list((data / "thumbs").glob("*.jpg"))) == len(
        open_store(results / "atlas_maps/tiny/photos.zarr").image_id
    )
    cosine = open_store(results / "scores/tiny.zarr", "scores").cosine.values
    check_search_and_filters(atlas_page, int((cosine < 0).sum()), cosine.size, (1, 2, 3))
