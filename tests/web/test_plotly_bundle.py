"""The factory of plotly.js's UMD wrapper put in parentheses, and only where the wrapper is the
one plotly.js builds. That the installed bundle still runs is shown by every browser test."""

from __future__ import annotations

from pathlib import Path

import pytest

from otelstats.web.plotly_bundle import PlotlyBundle, eager_factory

# plotly.js 3's wrapper as its build writes it, around a factory of a few statements.
UMD = """/**
* plotly.js v9.9.9
*/
(
 function(root, factory) {
  if (typeof module === "object" && module.exports) {
   module.exports = factory();
  } else {
   root.moduleName = factory();
  }
} (typeof self !== "undefined" ? self : this, () => {
"use strict";var Plotly=(()=>{var f=()=>{};return {f}})();
window.Plotly = Plotly;
return Plotly;
}));
"""


def test_the_factory_is_put_in_parentheses_and_nothing_else_changes() -> None:
    out = eager_factory(UMD)
    assert out == UMD.replace("this, () => {", "this, (() => {").replace("}));", "})));")


@pytest.mark.parametrize(
    "text",
    [
        # plotly.js 2 (webpack): no factory argument to wrap.
        '/*! plotly.js v2.35.2 */!function(t,e){"object"==typeof exports&&"object"==typeof module'
        "?module.exports=e():window.Plotly=e()}(self,(function(){return {}}));",
        UMD.replace("}));", "});"),  # the wrapper's end is not where it should be
        UMD.replace("() => {", "function () {", 1),  # a factory of another kind
        "/*" + " " * 5000 + "*/" + UMD,  # the wrapper is not at the head of the file
        "",
    ],
    ids=["plotly.js-2", "other-tail", "function-factory", "wrapper-too-late", "empty"],
)
def test_any_other_text_is_left_alone(text: str) -> None:
    assert eager_factory(text) is None


@pytest.mark.parametrize(
    "content",
    [b"!function(){window.Plotly={}}();\n", b"/* \xff */" + UMD.encode("utf-8")],
    ids=["another-wrapper", "not-utf-8"],
)
def test_an_unrecognised_bundle_is_served_exactly_as_installed(
    tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "plotly.min.js"
    path.write_bytes(content)
    bundle = PlotlyBundle.load(path)
    assert bundle.body == content
    assert not bundle.eager


def test_a_recognised_bundle_is_served_wrapped(tmp_path: Path) -> None:
    path = tmp_path / "plotly.min.js"
    path.write_text(UMD, encoding="utf-8")
    bundle = PlotlyBundle.load(path)
    assert bundle.eager
    assert bundle.body.decode("utf-8") == eager_factory(UMD)
    assert bundle.etag != PlotlyBundle.load(Path(__file__)).etag
