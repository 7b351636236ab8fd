"""The comparison command's pure parts: variant validation, aggregation, the table and the README update."""
from __future__ import annotations

import pytest

from pipeline import compare
from pipeline.config import Params, ParamsError


def params_with_variants(variants: dict) -> Params:
    raw = Params.load().model_dump(mode="json")
    raw["compare"]["variants"] = variants
    return Params.from_dict(raw)


def test_committed_variants_are_valid():
    compare.check_variants(Params.load())


@pytest.mark.parametrize(
    "variant, message",
    [
        ({"loss.dis_wieght": 0.1}, "loss.dis_wieght"),
        ({"nope.key": 1}, "nope.key"),
        ({"train.method": "nope"}, "nope"),
        ({"loss.dis_weight": -1.0}, "dis_weight"),
    ],
)
def test_bad_variant_fails_before_running(variant, message):
    with pytest.raises(ParamsError, match=message) as info:
        compare.check_variants(params_with_variants({"bad": variant}))
    assert "compare.variants.bad" in str(info.value)


def test_overrides_add_the_seed():
    params = params_with_variants({"ft": {"train.method": "finetune"}})
    assert compare.overrides(params, "ft", 7) == {"train.method": "finetune", "train.seed": 7}


def test_aggregate_mean_and_sample_std():
    runs = {"ft": [{"method": "finetune", "transfer": 10.0, "average": 50.0, "last": 60.0},
                   {"method": "finetune", "transfer": 14.0, "average": 50.0, "last": 62.0}]}
    table = compare.aggregate(runs, [0, 1])
    # mean of 10 and 14 is 12; sample std = sqrt(((10-12)^2 + (14-12)^2) / 1) = sqrt(8) = 2.83
    assert table["ft"]["transfer"] == {"mean": 12.0, "std": 2.83, "values": [10.0, 14.0]}
    assert table["ft"]["average"]["std"] == 0.0
    assert table["ft"]["last"]["mean"] == 61.0


def test_markdown_and_readme_update(tmp_path):
    summary = {"seeds": [0, 1], "zero_shot": {"transfer": 55.5},
               "variants": compare.aggregate({"ft": [{"method": "finetune", "transfer": 1.0, "average": 2.0, "last": 3.0}] * 2}, [0, 1])}
    table = compare.markdown(summary)
    assert "| E0 zero-shot | - | 55.50 |" in table
    assert "| ft | finetune | 1.00 ± 0.00 | 2.00 ± 0.00 | 3.00 ± 0.00 |" in table
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{compare.MARKERS[0]}\nold table\n{compare.MARKERS[1]}\noutro\n")
    compare.update_readme(table, readme)
    text = readme.read_text()
    assert "old table" not in text and table in text and text.startswith("intro\n") and text.endswith("outro\n")
