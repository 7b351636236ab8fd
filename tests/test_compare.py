"""The comparison command's pure parts: variant validation, aggregation, the tables, the figure and the README."""
from __future__ import annotations

import pytest

from pipeline import compare, compare_tables, io, paths
from pipeline.config import Params, ParamsError

CL, DISTILL = compare.BRANCHES["cl"], compare.BRANCHES["distill"]


def params_with(key: str, variants: dict) -> Params:
    raw = Params.load().model_dump(mode="json")
    raw["compare"][key] = variants
    return Params.from_dict(raw)


@pytest.mark.parametrize("branch", [CL, DISTILL])
def test_committed_variants_are_valid(branch):
    compare.check_variants(Params.load(), branch)


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
        compare.check_variants(params_with("variants", {"bad": variant}))
    assert "compare.variants.bad" in str(info.value)


def test_bad_distill_variant_is_named():
    with pytest.raises(ParamsError, match="compare.distill_variants.bad") as info:
        compare.check_variants(params_with("distill_variants", {"bad": {"distill.student.leff_kernel": 2}}), DISTILL)
    assert "leff_kernel" in str(info.value)


def test_overrides_add_the_branch_seed():
    params = params_with("variants", {"ft": {"train.method": "finetune"}})
    assert compare.overrides(params, "ft", 7) == {"train.method": "finetune", "train.seed": 7}
    params = params_with("distill_variants", {"hard": {"distill.mode": "hard"}})
    assert compare.overrides(params, "hard", 2, DISTILL) == {"distill.mode": "hard", "distill.seed": 2}
    assert compare.experiment_name(DISTILL, "hard", 2) == "cmp-distill-hard-s2"


def _cl_run(transfer, average, last, seconds, memory, matrix):
    return {"method": "finetune", "transfer": transfer, "average": average, "last": last,
            "seconds_per_task": seconds, "peak_memory_mb": memory, "matrix": matrix}


def test_summarise_cl_mean_std_cost_and_curve():
    m1 = [[90.0, 80.0], [100.0, 60.0], [50.0, 100.0]]
    m2 = [[90.0, 80.0], [80.0, 60.0], [70.0, 100.0]]
    runs = {"ft": [_cl_run(10.0, 50.0, 60.0, 2.0, 900.0, m1), _cl_run(14.0, 50.0, 62.0, 4.0, 1100.0, m2)]}
    table = compare_tables.summarise_cl(runs, [0, 1])["variants"]["ft"]
    # mean of 10 and 14 is 12; sample std = sqrt(((10-12)^2 + (14-12)^2) / 1) = sqrt(8) = 2.83
    assert table["transfer"] == {"mean": 12.0, "std": 2.83, "values": [10.0, 14.0]}
    assert table["average"]["std"] == 0.0 and table["last"]["mean"] == 61.0
    assert table["seconds_per_task"]["mean"] == 3.0 and table["peak_memory_mb"]["mean"] == 1000.0
    # row means: run 1 (85, 80, 75), run 2 (85, 70, 85) -> (85, 75, 80)
    assert table["curve"] == [85.0, 75.0, 80.0]


def test_markdown_cl_and_readme_update(tmp_path):
    runs = {"ft": [_cl_run(1.0, 2.0, 3.0, 5.0, 800.0, [[1.0], [2.0]])] * 2}
    summary = compare_tables.summarise_cl(runs, [0, 1]) | {"reference": {"zero_shot_transfer": 55.5}, "seconds": 12}
    table = compare_tables.markdown_cl(summary)
    assert "| E0 zero-shot | - | 55.50 | - | - | - | - |" in table
    assert "| ft | finetune | 1.00 ± 0.00 | 2.00 ± 0.00 | 3.00 ± 0.00 | 5.0 | 800 |" in table
    runs["ft"] = [_cl_run(1.0, 2.0, 3.0, s, 800.0, [[1.0], [2.0]]) for s in (5.0, 50.0, 6.0)]  # one slowed run
    summary = compare_tables.summarise_cl(runs, [0, 1, 2]) | {"reference": {"zero_shot_transfer": 55.5}, "seconds": 12}
    assert "| 6.0 | 800 |" in compare_tables.markdown_cl(summary)  # the median
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{CL.markers[0]}\nold table\n{CL.markers[1]}\noutro\n")
    compare_tables.update_readme(table, CL.markers, readme)
    text = readme.read_text()
    assert "old table" not in text and table in text and text.startswith("intro\n") and text.endswith("outro\n")


def test_distill_summary_and_table():
    def run(student, baseline):
        return {"mode": "soft", "params": {"student": 1234, "teacher": 99999},
                "student": {"class": student, "dist": student, "fused": student},
                "baseline": {"class": baseline, "dist": baseline, "fused": baseline}}

    summary = compare_tables.summarise_distill({"soft": [run(80.0, 60.0), run(82.0, 61.0)]}, [0, 1])
    entry = summary["variants"]["soft"]
    assert entry["gain"]["values"] == [20.0, 21.0] and entry["gain"]["mean"] == 20.5
    reference = {"task": "count+colour", "classes": 28, "teacher": "cnn resnet18", "teacher_accuracy": 88.0,
                 "params": {"teacher": 99999, "student": 1234}}
    table = compare_tables.markdown_distill(summary | {"reference": reference, "seconds": 3})
    assert "| soft | soft | 1,234 | 81.00 ± 1.41 | 81.00 ± 1.41 | 81.00 ± 1.41 | 60.50 ± 0.71 | 20.50 ± 0.71 |" in table
    assert "cnn resnet18" in table and "88.00 %" in table


def test_plot_curves_writes_png_and_data(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    io.write_json(paths.MATRIX, {"columns": ["a", "b"], "matrix": [[90.0, 80.0], [95.0, 70.0], [60.0, 99.0]]})
    summary = {"seeds": [0], "reference": {"matrix": [[90.0, 80.0], [95.0, 70.0], [60.0, 99.0]]},
               "variants": {"ft": {"curve": [85.0, 82.5, 79.5]}, "dt": {"curve": [85.0, 84.0, 83.0]}}}
    compare_tables.plot_curves(summary, paths.COMPARE_PLOT)
    assert paths.COMPARE_PLOT.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = io.read_json(paths.COMPARE_CURVES)
    assert rows[0] == {"variant": "ft", "after": ["e0", "a", "b"], "average": [85.0, 82.5, 79.5]}
