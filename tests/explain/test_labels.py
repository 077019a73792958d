"""Human labels for the test errors: fetched once from a local stand-in for the published files,
checked by SHA-256, cached beside the betons, skipped in one line offline or for an image folder;
each error's note (cleanlab's flag, people's votes, the audit) and the counts over them."""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json

import numpy as np
import pytest

from conftest import LocalFiles

from ffcv_resnet.explain import labels as L
from ffcv_resnet.records import TestError as Err

N = 12  # test images of the stand-in data


def _published():
    """Files in the published formats: CIFAR-10H's (N, 10) int64 counts, the audit's JSON."""
    counts = np.zeros((N, 10), np.int64)
    counts[np.arange(N), np.arange(N) % 10] = 45
    counts[3, 7], counts[3, 3] = 40, 5  # image 3 (label 3): most people say 7
    buf = io.BytesIO()
    np.save(buf, counts)
    audit = [{"id": 3, "url": "x", "given_original_label": 3, "given_original_label_name": "cat",
              "our_guessed_label": 7, "our_guessed_label_name": "horse",
              "mturk": {"given": 1, "guessed": 4, "neither": 0, "both": 0}},
             {"id": 5, "url": "y", "given_original_label": 5, "given_original_label_name": "dog",
              "our_guessed_label": 3, "our_guessed_label_name": "cat",
              "mturk": {"given": 4, "guessed": 1, "neither": 0, "both": 0}}]
    return {"counts.npy": buf.getvalue(), "audit.json": json.dumps(audit).encode()}


@pytest.fixture
def stand_in(monkeypatch):
    files = _published()
    server = LocalFiles(files)
    monkeypatch.delenv(L.OFFLINE_ENV, raising=False)
    monkeypatch.setattr(L, "COUNTS", dataclasses.replace(
        L.COUNTS, url=f"{server.base}/counts.npy",
        sha256=hashlib.sha256(files["counts.npy"]).hexdigest()))
    monkeypatch.setattr(L, "AUDIT", dataclasses.replace(
        L.AUDIT, url=f"{server.base}/audit.json",
        sha256=hashlib.sha256(files["audit.json"]).hexdigest()))
    monkeypatch.setattr(L, "FILES", (L.COUNTS, L.AUDIT))
    yield server
    server.close()


META = {"source": {"kind": "batches-folder"}, "counts": {"test": N, "train": 30},
        "classes": [str(c) for c in range(10)]}
ERRORS = [Err(3, 3, 7, 0.9, label_issue=True), Err(5, 5, 2, 0.6, label_issue=False),
          Err(8, 8, 1, 0.5, label_issue=False)]


def test_fetched_once_checked_and_cached_beside_the_betons(stand_in, tmp_path):
    human, said = L.human_labels(tmp_path, META, log=lambda *_: None)
    assert human is not None and said.startswith("human labels: CIFAR-10H")
    assert stand_in.requests == 2 and sorted(p.name for p in (tmp_path / L.HUMAN_DIR).iterdir()) \
        == ["cifar10_mturk.json", "cifar10h-counts.npy"]
    assert human.audited.tolist() == [i in (3, 5) for i in range(N)]
    assert human.audit_wrong.tolist() == [i == 3 for i in range(N)]  # 1 of 5 kept its label
    again, _ = L.human_labels(tmp_path, META, log=lambda *_: None)
    assert stand_in.requests == 2 and np.array_equal(again.counts, human.counts)  # the cache
    ev = L.LabelEvidence.of(ERRORS, human, said)
    assert ev.row(3, 3) == {"cleanlab": True, "human": human.counts[3].tolist(),
                            "audit": "label wrong", "suspect": True}
    assert ev.row(5, 5)["audit"] == "checked" and not ev.row(5, 5)["suspect"]
    assert ev.summary == {"suspect": 1, "cleanlab": 1, "humans_chose_model": 1, "audited": 2,
                          "audit_wrong": 1, "human_labels": said}


def test_a_checksum_mismatch_is_one_line_and_the_file_is_removed(stand_in, tmp_path,
                                                                 monkeypatch):
    monkeypatch.setattr(L, "FILES", (dataclasses.replace(L.COUNTS, sha256="0" * 64), L.AUDIT))
    human, said = L.human_labels(tmp_path, META, log=lambda *_: None)
    assert human is None and said == (f"human labels skipped: {stand_in.base}/counts.npy: the "
                                      f"download failed its SHA-256 check ({'0' * 64}); removed")
    assert not list((tmp_path / L.HUMAN_DIR).iterdir())


def test_offline_a_damaged_cache_or_an_image_folder_is_skipped_in_one_line(stand_in, tmp_path,
                                                                         monkeypatch):
    folder_meta = {**META, "source": {"kind": "image-tar"}}
    human, said = L.human_labels(tmp_path, folder_meta, log=lambda *_: None)
    assert human is None and "image-tar, whose test order is not known" in said
    assert stand_in.requests == 0
    L.human_labels(tmp_path, META, log=lambda *_: None)
    (tmp_path / L.HUMAN_DIR / "cifar10h-counts.npy").write_bytes(b"damaged")
    monkeypatch.setenv(L.OFFLINE_ENV, "1")
    human, said = L.human_labels(tmp_path, META, log=lambda *_: None)
    assert human is None and "forbids fetching it" in said  # the damaged copy was not used
    monkeypatch.delenv(L.OFFLINE_ENV)
    monkeypatch.setattr(L, "FILES", (dataclasses.replace(L.COUNTS, url="http://127.0.0.1:9/x"),
                                     L.AUDIT))
    human, said = L.human_labels(tmp_path, META, log=lambda *_: None)
    assert human is None and said.startswith("human labels skipped: could not fetch "
                                             "http://127.0.0.1:9/x") and "offline?" in said
