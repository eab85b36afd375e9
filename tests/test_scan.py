"""The folder scan: stat-only, symlinks contained, loops and special files refused."""

from __future__ import annotations

import os
from pathlib import Path

from sidecar.scan import scan_paths, scan_tree


def accept_md(rel: tuple[str, ...], is_dir: bool) -> bool:
    if any(part.startswith(".") for part in rel):
        return False
    return is_dir or rel[-1].endswith(".md")


def test_finds_accepted_files_with_size_and_mtime(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("hello")
    (tmp_path / "b.txt").write_text("ignored")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.md").write_text("x" * 10)
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "d.md").write_text("no")
    result = scan_tree([tmp_path], accept_md)
    real = tmp_path.resolve()
    assert set(result.files) == {str(real / "a.md"), str(real / "sub" / "c.md")}
    size, mtime = result.files[str(real / "sub" / "c.md")]
    assert size == 10 and mtime == (tmp_path / "sub" / "c.md").stat().st_mtime_ns
    assert result.refused == []


def test_symlink_escaping_the_folder_is_refused(tmp_path: Path) -> None:
    inside, outside = tmp_path / "inside", tmp_path / "outside"
    inside.mkdir()
    outside.mkdir()
    (outside / "secret.md").write_text("secret")
    (inside / "ok.md").write_text("ok")
    os.symlink(outside / "secret.md", inside / "link.md")
    os.symlink(outside, inside / "dirlink")
    os.symlink(inside / "ok.md", inside / "alias.md")  # inside → fine, deduplicated
    result = scan_tree([inside], accept_md)
    assert set(result.files) == {str((inside / "ok.md").resolve())}
    reasons = {Path(r.path).name: r.reason for r in result.refused}
    assert reasons == {"link.md": "outside_folder", "dirlink": "outside_folder"}
    assert all("outside" in r.message for r in result.refused)


def test_symlink_loops_and_broken_links_do_not_hang(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.md").write_text("x")
    os.symlink(tmp_path, tmp_path / "a" / "back")  # loop to the root
    os.symlink(tmp_path / "self1", tmp_path / "self2")
    os.symlink(tmp_path / "self2", tmp_path / "self1")
    os.symlink(tmp_path / "nowhere.md", tmp_path / "dangling.md")
    result = scan_tree([tmp_path], accept_md)
    assert set(result.files) == {str((tmp_path / "a" / "x.md").resolve())}
    reasons = sorted(r.reason for r in result.refused)
    assert "symlink_loop" in reasons
    assert "broken_symlink" in reasons


def test_fifo_is_refused_without_opening(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.md")
    result = scan_tree([tmp_path], accept_md)  # would block forever if opened
    assert result.files == {}
    assert [r.reason for r in result.refused] == ["not_regular_file"]


def test_scan_paths_applies_the_same_rules(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "x.md").write_text("no")
    (tmp_path / "new.md").write_text("yes")
    (tmp_path / "new.txt").write_text("no")
    outside = tmp_path.parent / (tmp_path.name + "_out.md")
    outside.write_text("no")
    os.symlink(outside, tmp_path / "esc.md")
    result = scan_paths([tmp_path / ".git" / "x.md", tmp_path / "new.md", tmp_path / "new.txt",
                         tmp_path / "esc.md", tmp_path / "gone.md", outside],
                        [tmp_path], accept_md)
    assert set(result.files) == {str((tmp_path / "new.md").resolve())}
    assert [r.reason for r in result.refused] == ["outside_folder"]
