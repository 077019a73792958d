"""compare.py's statistics on constructed runs with known differences, worked out by hand and
held to scipy."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from conftest import fake_run, TWO_CLASS_LABELS

from ffcv_resnet.compare.compare import comparison, summary_line
from ffcv_resnet.compare.runs import read_sides
from ffcv_resnet.compare.stats import bootstrap_ci, group_ci, mcnemar_p, two_by_two, verdict, welch


def test_two_by_two_mcnemar_and_the_interval_by_hand(tmp_path):
    # A wrong on 0..11 (12 errors); B wrong on 10..13: B fixed 0..9 (10), broke 12, 13 (2)
    a = fake_run(tmp_path, "a", {i: 1 - TWO_CLASS_LABELS[i] for i in range(12)}, TWO_CLASS_LABELS, "ra")
    b = fake_run(tmp_path, "b", {i: 1 - TWO_CLASS_LABELS[i] for i in range(10, 14)}, TWO_CLASS_LABELS, "rb",
                 config={"training.lr": 0.2})
    (ra,), (rb,) = read_sides([str(a)], [str(b)])
    c = comparison([ra], [rb], seed=0)
    assert c["table"] == {"both_right": 86, "only_a_right": 2, "only_b_right": 10,
                          "both_wrong": 2}
    assert c["fixed"] == list(range(10)) and c["broke"] == [12, 13]
    # exact binomial, two-sided: 2 * P(X <= 2 | n = 12, 1/2) = 2 * (1 + 12 + 66) / 4096
    assert c["mcnemar_p"] == pytest.approx(2 * 79 / 4096)
    assert c["difference"] == pytest.approx(0.08)  # 96% - 88%
    lo, hi = c["difference_ci95"]
    # the per-image differences: ten +1, two -1, 88 zeros; sd of the mean by hand
    d = np.array([1] * 10 + [-1] * 2 + [0] * 88)
    se = d.std() / math.sqrt(100)
    assert lo < 0.08 < hi and hi - lo == pytest.approx(2 * 1.96 * se, rel=0.15)
    assert lo > 0 and c["verdict"] == "B is better"
    assert summary_line(c).startswith("B - A = +8.00 points [95% CI +")
    assert "McNemar p = 0.0386 (10 fixed, 2 broke): B is better" in summary_line(c)
    # class 0: A wrong on 0..11, B on 10..13 (all class 0): 10 fixed, 2 broke of 50 -> +16 pts
    assert c["per_class"]["c0"]["difference"] == pytest.approx(0.16)
    assert c["per_class"]["c1"]["difference"] == 0 and c["per_class"]["c1"]["difference_ci95"] == [0, 0]
    # confusion change: B has 8 fewer c0 -> c1 errors, 8 more c0 right
    assert c["confusion_change"] == [[8, -8], [0, 0]]
    assert c["differences"]["options"] == {"training.lr": {"a": [0.4], "b": [0.2]}}
    assert c["differences"]["timings"]["train_seconds"]["difference"] == 0


def test_no_difference_is_said_honestly(tmp_path):
    a = fake_run(tmp_path, "a", {0: 1, 1: 1, 2: 1}, TWO_CLASS_LABELS, "ra")
    b = fake_run(tmp_path, "b", {1: 1, 2: 1, 3: 1}, TWO_CLASS_LABELS, "rb")
    c = comparison(*read_sides([str(a)], [str(b)]), seed=0)
    assert c["difference"] == 0 and c["difference_ci95"][0] < 0 < c["difference_ci95"][1]
    assert c["mcnemar_p"] == 1.0 and c["verdict"].startswith("no difference shown")


def test_groups_welch_and_images_fixed_in_every_seed(tmp_path):
    # A's three seeds all miss 0..9 plus one own image; B's three all get 0..9 right
    a = [fake_run(tmp_path, f"a{k}", {**{i: 1 for i in range(10)}, 20 + k: 1}, TWO_CLASS_LABELS, f"a{k}")
         for k in range(3)]
    b = [fake_run(tmp_path, f"b{k}", {30 + k: 1, 40: 1} if k else {30: 1}, TWO_CLASS_LABELS, f"b{k}")
         for k in range(3)]
    sa, sb = read_sides([str(p) for p in a], [str(p) for p in b])
    c = comparison(sa, sb, seed=0)
    acc_a, acc_b = np.array([0.89] * 3), np.array([0.99, 0.98, 0.98])
    assert c["mode"] == "groups" and c["groups"]["a"]["mean"] == pytest.approx(0.89)
    assert c["groups"]["b"]["sd"] == pytest.approx(np.std(acc_b, ddof=1))
    assert c["difference"] == pytest.approx(acc_b.mean() - acc_a.mean())
    # Welch by hand: t = (mb - ma) / sqrt(vb/nb + va/na), with va = 0
    t = (acc_b.mean() - acc_a.mean()) / math.sqrt(np.var(acc_b, ddof=1) / 3)
    assert c["welch"]["t"] == pytest.approx(t) and c["welch"]["df"] == pytest.approx(2.0)
    assert c["fixed"] == list(range(10)) and c["broke"] == []  # 30, 31, 32, 40: not every seed
    assert c["wrong_fraction"][40] == [0.0, pytest.approx(2 / 3)]
    assert c["wrong_fraction"][0] == [1.0, 0.0] and 50 not in c["wrong_fraction"]
    assert "Welch p = " in summary_line(c) and "10 fixed and 0 broken in every seed" in \
        summary_line(c)


def test_statistics_against_scipy_and_by_hand():
    assert two_by_two([1, 1, 0, 0], [1, 0, 1, 0]) == {"both_right": 1, "only_a_right": 1,
                                                     "only_b_right": 1, "both_wrong": 1}
    assert mcnemar_p(9, 1) == pytest.approx(2 * 11 / 1024)  # 2 * P(X <= 1 | 10)
    assert mcnemar_p(0, 0) == 1.0 and mcnemar_p(5, 5) == 1.0
    assert bootstrap_ci(np.zeros(10), 0) == [0.0, 0.0]
    assert bootstrap_ci(np.array([1, -1] * 50), 0) == bootstrap_ci(np.array([1, -1] * 50), 0)
    assert group_ci(np.array([0.9]), np.array([0.91, 0.92]), 0) is None
    assert welch(np.array([0.9]), np.array([0.91, 0.92])) is None
    assert verdict(0.01, [0.001, 0.02]) == "B is better"
    assert verdict(-0.01, [-0.02, -0.001]) == "A is better"


def test_fixed_and_broken_images_count_their_label_suspects(tmp_path):
    a = fake_run(tmp_path, "a", {i: 1 - TWO_CLASS_LABELS[i] for i in range(6)}, TWO_CLASS_LABELS,
                 "ra")
    b = fake_run(tmp_path, "b", {i: 1 - TWO_CLASS_LABELS[i] for i in range(4, 9)},
                 TWO_CLASS_LABELS, "rb")
    for run, flagged in ((a, {0, 2}), (b, {7})):  # as training marks them in errors.json
        doc = json.loads((run / "errors.json").read_text())
        for e in doc["errors"]:
            e["label_issue"] = e["index"] in flagged
        (run / "errors.json").write_text(json.dumps(doc))
    (ra,), (rb,) = read_sides([str(a)], [str(b)])
    c = comparison([ra], [rb], seed=0)
    assert c["fixed"] == [0, 1, 2, 3] and c["broke"] == [6, 7, 8]
    assert c["label_suspect"] == {"fixed": 2, "broke": 1}
    (plain,), _ = read_sides([str(fake_run(tmp_path, "c", {0: 1}, TWO_CLASS_LABELS, "rc"))],
                             [str(b)])
    assert comparison([plain], [rb], seed=0)["label_suspect"]["fixed"] is None  # not looked for
