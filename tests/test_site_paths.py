"""`sites.split_rel` answers what `PurePosixPath` would for the paths a scan makes."""

from __future__ import annotations

from pathlib import PurePosixPath

from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.sources.sites import split_rel

# Folder and file names as scandir yields them: never empty, never "." or "..", no "/".
segment = st.text(alphabet=st.sampled_from("ab_.-~ 文章\u00e9"), min_size=1, max_size=6).filter(
    lambda s: s not in (".", "..")
)


@settings(max_examples=3000, deadline=None)
@given(st.lists(segment, min_size=1, max_size=5))
def test_split_rel_is_what_purepath_gives(parts):
    rel = "/".join(parts)
    path = PurePosixPath(rel)
    assert split_rel(rel) == (list(path.parts[:-1]), path.name, path.stem)


def test_examples():
    assert split_rel("_posts/2024-01-02-a.md") == (["_posts"], "2024-01-02-a.md", "2024-01-02-a")
    assert split_rel("content/_index.md")[2] == "_index"
    assert split_rel(".md") == ([], ".md", ".md")
    assert split_rel("a/b.") == (["a"], "b.", "b.")
