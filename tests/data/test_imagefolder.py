"""Image folders and their tars: litter counted, nested or misplaced images and ambiguous
roots refused."""
from __future__ import annotations

import io
import tarfile

import pytest
from PIL import Image

from conftest import QUIET, tar_folder, tar_members, write_image_folder

from ffcv_resnet.data.convert import prepare
from ffcv_resnet.errors import DataError


def _image_folder_with(tmp_path, tiny, mutate):
    root = write_image_folder(tmp_path / "imgs", tiny)
    mutate(root)
    return root


def _tar(path, members):
    with tarfile.open(path, "w") as tar:
        for name, raw in members:
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return path


@pytest.mark.parametrize("mutate,message", [
    (lambda r: Image.new("RGB", (31, 32)).save(r / "train/cat/0009.png"), "31x32 RGB"),
    (lambda r: Image.new("RGBA", (32, 32)).save(r / "test/dog/0011.png"), "32x32 RGBA"),
    (lambda r: (r / "train/cat/0009.png").write_bytes(b"not an image"), "unreadable image"),
    (lambda r: (r / "train/cat").rename(r / "train/kitten"), "unknown class folder 'train/kitten'"),
    (lambda r: [p.unlink() for p in (r / "test/ship").iterdir()], "missing class folder"),
    (lambda r: [p.unlink() for p in (r / "test").rglob("*.png")], "empty split"),
])
def test_bad_image_folder(tmp_path, tiny, mutate, message):
    root = _image_folder_with(tmp_path, tiny, mutate)
    with pytest.raises(DataError, match=message):
        prepare(tmp_path / "d", str(root), log=lambda *_: None)
    assert not (tmp_path / "d").exists()


def test_tar_with_extra_files_and_prefix_is_read(tmp_path, tiny):
    root = write_image_folder(tmp_path / "imgs", tiny, fmt="bmp")
    (root / "README.md").write_text("hello")
    archive = tar_folder(root, tmp_path / "x.tar", "deep/prefix")
    meta = prepare(tmp_path / "d", str(archive), log=lambda *_: None)
    assert meta["counts"] == {"train": 30, "test": 20}


def test_nested_and_misplaced_images_are_errors_litter_is_counted(tmp_path, tiny):
    root = write_image_folder(tmp_path / "imgs", tiny)
    (root / "train/cat/.DS_Store").write_bytes(b"\0")
    (root / "train/__MACOSX").mkdir()
    (root / "train/__MACOSX/._0001.png").write_bytes(b"\0")
    (root / "README.md").write_text("outside the splits: skipped, and counted")
    (root / "extras").mkdir()
    (root / "extras/notes.txt").write_text("so is this")
    said = []
    meta = prepare(tmp_path / "d", str(root), log=said.append)
    assert meta["counts"] == {"train": 30, "test": 20}
    assert any("skipped 4 files" in s for s in said), said
    nested = root / "train/cat/more"
    nested.mkdir()
    Image.fromarray(tiny["train"].images[0]).save(nested / "x.png")
    with pytest.raises(DataError, match="'train/cat/more/x.png' is not at split/class/file"):
        prepare(tmp_path / "d2", str(root), **QUIET)
    nested.joinpath("x.png").unlink()
    (root / "test/notes.txt").write_text("misplaced")
    with pytest.raises(DataError, match="'test/notes.txt' is not at split/class/file"):
        prepare(tmp_path / "d2", str(root), **QUIET)


def test_two_roots_and_duplicate_members_in_a_tar_are_errors(tmp_path, tiny):
    two = _tar(tmp_path / "two.tar", tar_members(tiny, "a") + tar_members(tiny, "b"))
    with pytest.raises(DataError, match="two dataset roots, 'a' and 'b'"):
        prepare(tmp_path / "d", str(two), **QUIET)
    members = tar_members(tiny, "root")
    dup = _tar(tmp_path / "dup.tar", members + members[:1])
    with pytest.raises(DataError, match="'train/airplane/0.png' appears twice"):
        prepare(tmp_path / "d", str(dup), **QUIET)
    big = _tar(tmp_path / "big.tar", members + [("root/train/cat/huge.png", b"\0" * (2 << 20))])
    with pytest.raises(DataError, match="huge.png: 2097152 bytes, more than any CIFAR-10 file"):
        prepare(tmp_path / "d", str(big), **QUIET)
    assert not (tmp_path / "d").exists()
