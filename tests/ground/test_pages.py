"""pages.py: what the four HTML pages share (style, script helpers, script-safe JSON) is
defined once and filled into every template."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ffcv_resnet import pages

TEMPLATES = sorted(Path(pages.__file__).parent.glob("*/*_page.html"))


def test_every_page_takes_the_shared_style_and_helpers_and_defines_them_nowhere_else():
    assert sorted(t.name for t in TEMPLATES) == ["compare_page.html", "predict_page.html",
                                                 "report_page.html", "suspects_page.html"]
    for t in TEMPLATES:
        text = t.read_text()
        assert text.count("{{page_style}}") == 1 and text.count("{{page_script}}") == 1, t
        # only in PAGE_SCRIPT
        assert not re.search(r"\bconst\s+\$\s*=|\bfunction\s+el\s*\(", text), t
        filled = pages.fill_page(t, {"x": "</script><b>"}, **{
            k: "v" for k in set(re.findall(r"\{\{(\w+)\}\}", text)) - {
                "data", "page_style", "page_script"}})
        assert "{{" not in filled and filled.count('"use strict";') == 1, t
        assert pages.PAGE_STYLE in filled
        assert "</script><b>" not in filled  # the data cannot end its element early


def test_a_placeholder_nothing_fills_is_an_error(tmp_path):
    t = tmp_path / "t.html"
    t.write_text("<p>{{title}}</p>{{page_script}}")
    with pytest.raises(KeyError):
        pages.fill_page(t, {})
    assert pages.fill_page(t, {}, title="<a & b>").startswith("<p>&lt;a &amp; b&gt;</p>")


def test_script_json_reads_back_as_the_same_object():
    obj = {"s": "</script>&<!--", "n": [1, 2.5, None]}
    text = pages.script_json(obj)
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text) == obj
