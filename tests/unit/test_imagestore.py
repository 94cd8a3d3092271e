from envd.imagestore import ImageEntry, select_garbage


def entry(name: str, used: float, size: int, in_use: bool = False) -> ImageEntry:
    return ImageEntry(name, "sha256:" + name, "p", "project", name, size, used, used, in_use)


ENTRIES = [
    entry("old", 100, 10),
    entry("mid", 200, 10),
    entry("new", 300, 10),
    entry("live", 50, 10, in_use=True),
]


def test_without_limits_every_unused_image_goes() -> None:
    assert [e.image for e in select_garbage(ENTRIES, 0, 0, 400)] == ["old", "mid", "new"]


def test_keep_duration() -> None:
    assert [e.image for e in select_garbage(ENTRIES, 0, 150, 400)] == ["old", "mid"]


def test_keep_storage_removes_least_recently_used_first() -> None:
    assert [e.image for e in select_garbage(ENTRIES, 25, 0, 400)] == ["old", "mid"]


def test_what_a_lock_needs_is_never_chosen() -> None:
    assert all(e.image != "live" for e in select_garbage(ENTRIES, 1, 1, 10_000))
