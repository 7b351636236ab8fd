"""The comparison command's pure parts: variant validation, aggregation, the tables, the figures and publishing."""
from __future__ import annotations

import dataclasses
import json

import numpy as np

import pytest

from pipeline import io, paths
from pipeline.tools import compare, compare_tables, compression_tables, exp_queue
from pipeline.errors import InputError
from pipeline.params import Params, ParamsError

CL, DISTILL, TOKEN, COHORT = (compare.BRANCHES[b] for b in ("cl", "distill", "token", "cohort"))


def params_with(key: str, variants: dict) -> Params:
    raw = Params.load().model_dump(mode="json")
    raw["compare"][key] = variants
    return Params.from_dict(raw)


@pytest.mark.parametrize("branch", [CL, DISTILL, TOKEN, COHORT])
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


def test_bad_token_variant_is_named():
    with pytest.raises(ParamsError, match="compare.token_variants.bad") as info:
        compare.check_variants(params_with("token_variants", {"bad": {"distill.token.student.leff_kernel": 2}}), TOKEN)
    assert "leff_kernel" in str(info.value)


def test_a_distill_variant_whose_method_cannot_train_its_student_is_named():
    with pytest.raises(ParamsError, match="compare.distill_variants.bad") as info:
        compare.check_variants(params_with("distill_variants", {"bad": {"distill.method": "fitnet"}}), DISTILL)
    assert "cannot train student 'token'" in str(info.value)


def test_overrides_add_the_branch_seed():
    params = params_with("variants", {"ft": {"train.method": "finetune"}})
    # A seed of the continual comparison redraws the data, E0 and the batch order (compare.seed_keys) ...
    assert compare.overrides(params, "ft", 7) == {"train.method": "finetune", "data.seed": 7, "pretrain.seed": 7,
                                                  "train.seed": 7}
    assert {"prepare", "pretrain", "prototypes", "train@*", "evaluate"} <= set(CL.allowed_to_run(params))
    assert CL.targets == ("evaluate",)  # ... and never the compression branch, which data.seed also feeds
    # ... and seed 0 is the default pipeline's run: the same params, hence the same data, E0 and metrics.
    default = Params.load()
    assert default.with_overrides(compare.overrides(default, "dual_teacher", 0)).model_dump() == \
        default.with_overrides(default.compare.variants["dual_teacher"]).model_dump()
    assert (default.data.seed, default.pretrain.seed, default.train.seed) == (0, 0, 0)
    raw = params.model_dump(mode="json")
    raw["compare"]["seed_keys"] = ["train.seed"]  # the batch order alone: one data draw, one E0
    assert compare.overrides(Params.from_dict(raw), "ft", 7) == {"train.method": "finetune", "train.seed": 7}
    raw["compare"]["seed_keys"] = ["data.seed", "model.arch"]
    with pytest.raises(ParamsError, match="compare.seed_keys"):
        Params.from_dict(raw)
    params = params_with("token_variants", {"hard": {"distill.token.mode": "hard"}})
    # A seed of a compression comparison redraws the target's images, the teacher and the student ...
    assert compare.overrides(params, "hard", 2, TOKEN) == {"distill.token.mode": "hard", "data.seed": 2,
                                                           "teacher.seed": 2, "distill.seed": 2}
    # ... which reruns the target and teacher stages, never the continual branch's (data.seed feeds it too)
    assert TOKEN.targets == ("distill", "student_alone") and compare.BRANCHES["cohort"].targets == ("cohort",)
    assert {"target", "teacher"} <= set(compare.BRANCHES["distill"].allowed_to_run(params))
    assert compare.experiment_name(TOKEN, "hard", 2) == "cmp-token-hard-s2"


def test_a_sweep_sets_one_key_on_every_variant_under_its_tag():
    extra = compare.parse_sets(["distill.feature.weight=3", "distill.matching.choose=odd_first"], "w3")
    assert extra == {"distill.feature.weight": 3, "distill.matching.choose": "odd_first"}  # read as YAML
    params = params_with("distill_variants", {"fit": {"distill.student": "shufflenet_v2_x0_5",
                                                      "distill.method": "fitnet", "distill.feature.weight": 1.0}})
    sets = compare.overrides(params, "fit", 1, DISTILL, extra)
    assert sets["distill.feature.weight"] == 3 and sets["distill.seed"] == 1  # --set wins over the variant's own
    assert compare.experiment_name(DISTILL, "fit", 1, "w3") == "cmp-distill-fit-w3-s1"
    assert compare.experiment_name(CL, "ft", 0, "w3") == "cmp-ft-w3-s0"
    assert compare.outputs(DISTILL, "w3") == (paths.METRICS / "compare_distill-w3.json",
                                              paths.METRICS / "compare_distill-w3.md")
    assert compare.outputs(DISTILL, None) == DISTILL.outputs
    compare.check_variants(params, DISTILL, extra)
    with pytest.raises(ParamsError, match="compare.distill_variants.fit with --set"):
        compare.check_variants(params, DISTILL, {"distill.feature.weight": -1})


@pytest.mark.parametrize("sets, tag, message", [
    (["distill.feature.weight=3"], None, "--tag"),
    (["weight=3"], "w3", "dotted key"),
    (["distill.feature.weight"], "w3", "dotted key"),
    ([], "w 3", "--tag"),
])
def test_a_bad_sweep_is_refused_in_one_line(sets, tag, message):
    with pytest.raises(ParamsError, match=message):
        compare.parse_sets(sets, tag)


def test_publish_writes_the_table_the_blocks_naming_its_file_and_the_untagged_figures(tmp_path, monkeypatch):
    updates, drawn = [], []
    monkeypatch.setattr(compare.docs, "update", lambda root, only=None: updates.append(only) or [])
    monkeypatch.setattr(compare, "outputs", lambda branch, tag: (tmp_path / f"s-{tag}.json", tmp_path / f"t-{tag}.md"))
    branch = dataclasses.replace(DISTILL, plots=((lambda summary, path: drawn.append(path), tmp_path / "g.png"),))
    runs = {"kd": [_distill_run("kd", "mbv2", 70.0, 60.0, 0.010)]}
    summary = compression_tables.summarise_distill(runs, [0]) | {"reference": runs["kd"][0], "seconds": 3,
                                                             "setting": {"distill.feature.weight": 3}}
    compare.publish(branch, summary, "w3")
    table = (tmp_path / "t-w3.md").read_text()
    assert "| | kd | 70.00" in table and "`distill.feature.weight: 3`" in table
    # a tagged sweep rewrites the blocks that name its own file, and draws no figure of the branch
    assert updates == [(tmp_path / "s-w3.json").as_posix()] and drawn == []
    compare.publish(branch, summary)
    assert updates[-1] == (tmp_path / "s-None.json").as_posix() and drawn == [tmp_path / "g.png"]


def test_a_merge_keeps_the_overrides_only_where_every_row_has_them():
    old = {"variants": {"a": {}}, "seconds": 1, "commit": "abc1234"}
    new = {"variants": {"b": {}}, "seconds": 2, "commit": "def5678", "variant_overrides": {"b": {"x.y": 1}}}
    merged = compare.merge_summaries(old, new, ["b"])
    assert "variant_overrides" not in merged and merged["commit"] == "abc1234, def5678"
    merged = compare.merge_summaries(old | {"variant_overrides": {"a": {}}}, new, ["b"])
    assert merged["variant_overrides"] == {"a": {}, "b": {"x.y": 1}}
    assert compare.merge_summaries({"variants": {}, "seconds": None}, new, ["b"])["commit"].startswith("earlier rows")


def test_the_distill_setting_is_under_every_variant_and_lets_its_stages_run():
    raw = params_with("distill_variants", {"kd": {"distill.student": "shufflenet_v2_x0_5", "distill.method": "kd",
                                                  "distill.lr": 0.01}}).model_dump(mode="json")
    raw["compare"]["distill_setting"] = {"teacher.stem_stride": 1, "distill.lr": 0.02, "distill.stem_stride": 1}
    params = Params.from_dict(raw)
    assert compare.overrides(params, "kd", 1, DISTILL) == {
        "teacher.stem_stride": 1, "distill.lr": 0.01, "distill.stem_stride": 1,  # the variant's own value wins
        "distill.student": "shufflenet_v2_x0_5", "distill.method": "kd", "data.seed": 1, "teacher.seed": 1,
        "distill.seed": 1}
    # a seed redraws the target's images and the teacher: those stages run in every experiment, nothing upstream
    assert DISTILL.allowed_to_run(params) == ("distill", "student_alone", "teacher", "target")
    assert TOKEN.allowed_to_run(params) == ("distill", "student_alone", "target", "teacher")
    raw["compare"]["distill_setting"] = {"teacher.stem_stride": 3}
    with pytest.raises(ParamsError, match="compare.distill_variants.kd.*stem_stride"):
        compare.check_variants(Params.from_dict(raw), DISTILL)


def _cl_run(transfer, average, last, seconds, memory, matrix, zero_shot=55.5):
    return {"method": "finetune", "transfer": transfer, "average": average, "last": last,
            "seconds_per_task": seconds, "peak_memory_mb": memory, "matrix": matrix, "zero_shot_transfer": zero_shot}


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


def test_markdown_cl():
    runs = {"ft": [_cl_run(1.0, 2.0, 3.0, 5.0, 800.0, [[1.0], [2.0]])] * 2}
    summary = compare_tables.summarise_cl(runs, [0, 1]) | {"reference": {"zero_shot_transfer": 55.5}, "seconds": 12}
    table = compare_tables.markdown_cl(summary)  # an older summary: seeds set train.seed, one E0
    assert "| E0 zero-shot | - | 55.50 | - | - | - | - |" in table and "E0 is the same for every run" in table
    redrawn = compare_tables.summarise_cl({"ft": [_cl_run(1.0, 2.0, 3.0, 5.0, 800.0, [[1.0], [2.0]], z) for z in (50.0, 54.0)]},
                                          [0, 1]) | {"reference": {"zero_shot_transfer": 50.0}, "seconds": 12,
                                                     "seed_keys": ["data.seed", "pretrain.seed", "train.seed"]}
    redrawn_table = compare_tables.markdown_cl(redrawn)  # each seed's own E0: their mean and std
    assert "| E0 zero-shot | - | 52.00 ± 2.83 | - | - | - | - |" in redrawn_table
    assert "`data.seed`, `pretrain.seed`, `train.seed`; each seed redraws" in redrawn_table
    assert "| ft | finetune | 1.00 ± 0.00 | 2.00 ± 0.00 | 3.00 ± 0.00 | 5.0 | 800 |" in table
    runs["ft"] = [_cl_run(1.0, 2.0, 3.0, s, 800.0, [[1.0], [2.0]]) for s in (5.0, 50.0, 6.0)]  # one slowed run
    summary = compare_tables.summarise_cl(runs, [0, 1, 2]) | {"reference": {"zero_shot_transfer": 55.5}, "seconds": 12}
    assert "| 6.0 | 800 |" in compare_tables.markdown_cl(summary)  # the median


def test_the_cost_grows_task_by_task_against_fine_tunings():
    """Each task's training seconds (median over seeds) in training order, with the classes seen by then (from each
    task's chance level: 100 / classes), and the last task's against fine-tuning's."""
    def run(method, seconds):
        return _cl_run(1.0, 2.0, 3.0, float(np.mean(seconds)), 800.0, [[1.0, 1.0]] * 3) | {
            "method": method, "tasks": ["b", "a"], "chance": [20.0, 10.0], "seconds_by_task": seconds}

    runs = {"finetune": [run("finetune", [10.0, 10.0]), run("finetune", [12.0, 14.0]), run("finetune", [11.0, 90.0])],
            "dual_teacher": [run("dual_teacher", [10.0, 20.0]), run("dual_teacher", [12.0, 28.0]),
                             run("dual_teacher", [30.0, 21.0])]}
    summary = compare_tables.summarise_cl(runs, [0, 1, 2]) | {"reference": {"zero_shot_transfer": 1.0}, "seconds": None}
    entry = summary["variants"]["dual_teacher"]
    assert entry["seconds_by_task"] == [12.0, 21.0] and entry["classes_seen"] == [5, 15]  # b: 5 classes, a: 10 more
    table = compare_tables.markdown_cl(summary)
    assert "| variant | b (5) | a (15) | last task / finetune's |" in table
    assert "| dual_teacher | 12.0 | 21.0 | 1.50x |" in table and "| finetune | 11.0 | 14.0 | 1.00x |" in table
    assert "time not recorded: collected or resumed" in table
    assert compare_tables.markdown_cost({"variants": {"x": {}}}) == ""  # an older summary: no per-task times


def _distill_run(method, student, accuracy, alone, step, added=0, rule=None):
    distill = {"task": "count+colour", "classes": 28, "teacher": "cnn resnet18", "teacher_accuracy": 88.0,
               "teacher_parameters": 99999, "method": method, "student": student, "accuracy": accuracy,
               "heads": {"class": accuracy - 1, "dist": accuracy + 1, "fused": accuracy} if method == "token" else
               {"logits": accuracy}, "parameters": 1234, "added_parameters": added}
    if rule:
        distill["rule"] = rule
    return {"distill": distill, "alone": {"method": "supervised", "student": student, "accuracy": alone, "parameters": 1234},
            "cost": {"step_seconds": step}, "alone_cost": {"step_seconds": step / 2}}


def test_paired_gains_carry_the_student_t_interval():
    # hand-computed: mean 2, sample std 1, t(0.975, 2) = 4.3027, half-width 4.3027 / sqrt(3) = 2.4841
    entry = compare_tables.paired([1.0, 2.0, 3.0])
    assert (entry["mean"], entry["std"], entry["ci95"], entry["inside_noise"]) == (2.0, 1.0, [-0.48, 4.48], True)
    entry = compare_tables.paired([1.0, 1.2, 1.1])  # a steady gain: the interval clears 0
    assert entry["ci95"] == [0.85, 1.35] and entry["inside_noise"] is False
    assert compare_tables.paired([0.5])["ci95"] is None  # one seed: no interval, never called significant
    assert compare_tables._gain_cell(entry) == "+1.10 [+0.85, +1.35]"


def test_token_summary_and_table():
    runs = {"soft": [_distill_run("token", "token", 80.0, 60.0, 0.1), _distill_run("token", "token", 82.0, 61.0, 0.1)]}
    summary = compression_tables.summarise_token(runs, [0, 1])
    entry = summary["variants"]["soft"]
    assert entry["gain"]["values"] == [20.0, 21.0] and entry["gain"]["mean"] == 20.5
    # the committed default run (the reference) distilled from another teacher on another target: a --set sweep's
    # table names the runs' own teacher
    default = {"distill": runs["soft"][0]["distill"] | {"task": "shapes", "teacher": "cnn resnet10t",
                                                        "teacher_accuracy": 99.0}}
    table = compression_tables.markdown_token(summary | {"reference": default, "seconds": 3})
    # the gain paired by seed with its 95 % interval: 20.5 +- t(0.975, 1) 0.7071 / sqrt(2) = 20.5 +- 6.35
    assert "| soft | 1,234 | 80.00 ± 1.41 | 82.00 ± 1.41 | 81.00 ± 1.41 | 60.50 ± 0.71 | +20.50 [+14.15, +26.85] |" in table
    assert "Target `count+colour`" in table and "cnn resnet18" in table and "88.00 %" in table
    assert "resnet10t" not in table and "99.00" not in table


def test_distill_summary_and_table_side_by_side():
    runs = {
        "kd": [_distill_run("kd", "mbv2", 70.0, 60.0, 0.010), _distill_run("kd", "mbv2", 72.0, 62.0, 0.012)],
        "fitnet": [_distill_run("fitnet", "mbv2", 71.0, 60.0, 0.020, added=500),
                   _distill_run("fitnet", "mbv2", 73.0, 62.0, 0.022, added=500)],
        "sparse": [_distill_run("channel_matching", "mbv2", 74.0, 60.0, 0.023, rule="sparse"),
                   _distill_run("channel_matching", "mbv2", 74.0, 62.0, 0.021, rule="sparse")],
    }
    summary = compression_tables.summarise_distill(runs, [0, 1])
    assert summary["alone"]["mbv2"]["accuracy"]["mean"] == 61.0 and summary["variants"]["fitnet"]["step_ms"] == 21.0
    table = compression_tables.markdown_distill(summary | {"reference": runs["kd"][0], "seconds": 3})
    assert "| mbv2 (1,234) | alone | 61.00 ± 1.41 | | 0 | 5.5 | |" in table
    # gains paired by seed, 95 % interval mean +- t(0.975, 1) std / sqrt(2): [11, 11] -> no spread; [14, 12] -> 13 +- 12.71
    assert "| | fitnet | 72.00 ± 1.41 | +11.00 [+11.00, +11.00] | 500 | 21.0 | 1.00 |" in table
    assert "| | channel_matching (sparse) | 74.00 ± 0.00 | +13.00 [+0.29, +25.71] | 0 | 22.0 | 1.05 |" in table
    # the runs' own teacher and the setting under every row; the command as it is typed
    table = compression_tables.markdown_distill(summary | {"reference": {"distill": {}}, "seconds": 3,
                                                       "command": "make compare-distill",
                                                       "setting": {"distill.lr": 0.01}})
    assert "teacher `cnn resnet18`" in table and "Setting (every row): `distill.lr: 0.01`." in table
    assert "All runs in one `make compare-distill` (3 s)." in table


def test_a_collected_table_says_so():
    runs = {"kd": [_distill_run("kd", "mbv2", 70.0, 60.0, 0.010)]}
    summary = compression_tables.summarise_distill(runs, [0]) | {"reference": {"distill": {}}, "seconds": None,
                                                             "command": "make compare-distill"}
    assert "Runs of `make compare-distill`, tabled from DVC's experiments (`--collect`)." in \
        compression_tables.markdown_distill(summary)


def test_random_selection_per_image_has_its_own_row_name():
    per_step = _distill_run("channel_matching", "mbv2", 74.0, 60.0, 0.02, rule="random")
    per_image = _distill_run("channel_matching", "mbv2", 75.0, 60.0, 0.02, rule="random")
    per_step["distill"]["select_per"], per_image["distill"]["select_per"] = "step", "sample"
    summary = compression_tables.summarise_distill({"step": [per_step], "image": [per_image]}, [0])
    table = compression_tables.markdown_distill(summary | {"reference": {"distill": {}}, "seconds": 1})
    assert "| | channel_matching (random) | 74.00 ± 0.00 |" in table
    assert "| | channel_matching (random, per image) | 75.00 ± 0.00 |" in table


def test_merge_keeps_the_earlier_rows_and_students_alone():
    previous = {"variants": {"a": 1, "b": 2}, "alone": {"mbv3": "x", "shuffle": "y"}, "seconds": 10}
    summary = {"variants": {"b": 3}, "alone": {"shuffle": "z"}, "seconds": None}
    merged = compare.merge_summaries(previous, summary, ["b"])
    assert merged["variants"] == {"a": 1, "b": 3} and merged["alone"] == {"mbv3": "x", "shuffle": "z"}
    assert merged["seconds"] is None and merged["merged"] == ["b"]


def _cohort_run(method, accuracies, ensemble, step, memory=900.0):
    return {"cohort": {"task": "count+colour", "method": method, "networks": ["a", "b"], "parameters": [10, 2000],
                       "network_accuracy": accuracies, "accuracy": sum(accuracies) / len(accuracies),
                       "ensemble_accuracy": ensemble},
            "cost": {"step_seconds": step, "peak_memory_mb": memory}}


def test_cohort_summary_pairs_each_seed_with_the_cohort_alone(tmp_path):
    runs = {"alone": [_cohort_run("alone", [60.0, 70.0], 72.0, 0.010), _cohort_run("alone", [62.0, 72.0], 74.0, 0.012)],
            "mcl": [_cohort_run("mcl", [66.0, 74.0], 76.0, 0.020), _cohort_run("mcl", [64.0, 74.0], 75.0, 0.022)]}
    summary = compression_tables.summarise_cohort(runs, [0, 1])
    mcl = summary["variants"]["mcl"]
    assert mcl["network_accuracy"][0]["values"] == [66.0, 64.0] and mcl["accuracy"]["mean"] == 69.5
    assert mcl["gain"]["values"] == [5.0, 2.0] and mcl["step_ms"] == 21.0  # 70 - 65, 69 - 67
    table = compression_tables.markdown_cohort(summary | {"seconds": 3, "setting": {"cohort.epochs": 9}})
    assert "| method | a (10) | b (2,000) | mean network | gain over alone | ensemble |" in table
    assert "| alone | 61.00 ± 1.41 | 71.00 ± 1.41 | 66.00 ± 1.41 |  | 73.00 ± 1.41 | 11.0 | 1.00 | 900 |" in table
    # paired gains with their 95 % interval: network a [6, 2] -> 4 +- 25.41, b [4, 2] -> 3 +- 12.71, mean [5, 2] -> 3.5 +- 19.06
    assert ("| mcl | 65.00 ± 1.41 (+4.00 [-21.41, +29.41]) | 74.00 ± 0.00 (+3.00 [-9.71, +15.71]) | 69.50 ± 0.71 | "
            "+3.50 [-15.56, +22.56] | 75.50 ± 0.71 | 21.0 | 1.91 | 900 |") in table
    assert "Setting (every row): `cohort.epochs: 9`." in table and "(3 s)" in table
    assert mcl["network_gain"][0]["values"] == [6.0, 2.0]  # 66 - 60, 64 - 62
    runs["mcl_icl_positive"] = runs["mcl"]  # an ablation of a method: its row is named by the variant
    table = compression_tables.markdown_cohort(compression_tables.summarise_cohort(runs, [0, 1]))
    assert "| mcl | " in table and "| mcl_icl_positive | 65.00 ± 1.41 (+4.00 [" in table
    compression_tables.plot_cohort(summary | {"task": "count+colour"}, tmp_path / "cohort.png")
    assert (tmp_path / "cohort.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_experiments_of_earlier_baselines_are_collected_by_rev(monkeypatch, capsys):
    """`--collect --rev C`: a sweep queued at C is tabled after later commits (`dvc exp show --rev C`)."""
    calls = []

    def fake_dvc(*args):
        calls.append(args)
        show = [{"rev": "c1", "experiments": [{"revs": [{"name": "cmp-a-s0", "rev": "e1"}]}]},
                {"rev": "c2", "experiments": [{"revs": [{"name": "cmp-a-s0", "rev": "e2"}, {"name": "cmp-b-s0", "rev": "e3"}]}]}]
        return json.dumps(show)

    monkeypatch.setattr(exp_queue, "_dvc", fake_dvc)
    assert exp_queue.experiments(["c1", "c2"]) == {"cmp-a-s0": "e2", "cmp-b-s0": "e3"}
    assert calls[-1] == ("exp", "show", "--json", "--rev", "c1", "--rev", "c2")
    exp_queue.experiments()
    assert calls[-1] == ("exp", "show", "--json")
    with pytest.raises(SystemExit) as info:
        compare.main(["--branch", "distill", "--rev", "c1"])
    assert info.value.code == 2 and "--rev: only with --collect" in capsys.readouterr().err


def test_the_wait_starts_the_workers_again_when_they_stop_with_runs_queued(monkeypatch, capsys):
    """DVC's worker can leave with experiments still queued (a stale shutdown in its broker): the wait starts it
    again after two looks with runs queued, none running and no worker busy, instead of waiting for ever."""
    starts, looks = [], []

    def fake_dvc(*args):
        if args[:2] == ("queue", "status"):
            looks.append(1)
            state = "Success" if len(starts) > 1 else "Queued"
            return f"abcdef0 cmp-a-s0 06:39 AM {state}\n\nWorker status: 0 active, 0 idle"
        return "[]" if args[:2] == ("exp", "show") else ""

    monkeypatch.setattr(exp_queue, "_dvc", fake_dvc)
    monkeypatch.setattr(exp_queue, "POLL_SECONDS", 0)
    monkeypatch.setattr(exp_queue.subprocess, "run", lambda cmd, **k: starts.append(cmd))
    assert exp_queue.run_queued({"cmp-a-s0": {"x": 1}}, 1) == 0
    assert starts == [["dvc", "queue", "start", "--jobs", "1"]] * 2 and len(looks) == 1 + 3  # 1: the names queued
    assert "workers stopped with experiments queued" in capsys.readouterr().out


def test_resume_queues_only_the_runs_this_commit_has_not_made(monkeypatch, capsys):
    """A queue stopped part way (or a session that ended): `--resume` keeps the finished experiments of HEAD and
    queues the rest; without it every name is removed and queued again."""
    calls, queued = [], []

    def fake_dvc(*args):
        calls.append(args)
        if args[:2] == ("exp", "show"):
            return json.dumps([{"rev": "head", "experiments": [{"revs": [{"name": "cmp-a-s0", "rev": "e1"}]}]}])
        if args[:2] == ("exp", "run"):
            queued.append(args[args.index("--name") + 1])
        if args[:2] == ("queue", "status"):
            return "\n".join(f"abcdef{i} {name} 06:39 AM Success" for i, name in enumerate(queued))
        return ""

    monkeypatch.setattr(exp_queue, "_dvc", fake_dvc)
    monkeypatch.setattr(exp_queue, "POLL_SECONDS", 0)
    monkeypatch.setattr(exp_queue.subprocess, "run", lambda *a, **k: None)  # `dvc queue start`
    runs = {"cmp-a-s0": {"x": 1}, "cmp-b-s0": {"x": 2}}
    assert exp_queue.run_queued(runs, 1, ("evaluate",), resume=True) == 1
    assert queued == ["cmp-b-s0"] and not [c for c in calls if c[:2] == ("exp", "remove")]
    assert "--resume: 1 of 2 experiments already run on this commit, kept" in capsys.readouterr().out
    queued.clear()
    assert exp_queue.run_queued(runs, 1, ("evaluate",)) == 0
    assert queued == ["cmp-a-s0", "cmp-b-s0"] and ("exp", "remove", "cmp-a-s0") in calls
    queued.clear()
    calls.clear()
    exp_queue.run_queued({"cmp-a-s0": {"x": 1}}, 1, resume=True)  # nothing left: no queue started
    assert queued == [] and not [c for c in calls if c[0] == "queue"]
    with pytest.raises(SystemExit) as info:
        compare.main(["--resume", "--collect"])
    assert info.value.code == 2 and "--resume" in capsys.readouterr().err
    from pipeline.tools import search

    with pytest.raises(SystemExit) as info:
        search.main(["--resume", "--collect"])
    assert info.value.code == 2 and "--resume" in capsys.readouterr().err


def test_the_queue_is_looked_at_soon_at_first_and_then_twice_a_minute():
    assert exp_queue.poll_wait(0) == 2 and exp_queue.poll_wait(40) == 6
    assert exp_queue.poll_wait(3600) == exp_queue.POLL_SECONDS == 30


def test_a_comparison_records_its_machine_and_commit():
    import torch

    info = compare.machine()
    assert info["torch"] == torch.__version__ and info["cores"] >= 1 and info["cpu"]
    assert info["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    if info["cpu_capability"] in ("AVX2", "AVX512"):  # the kernels torch chose need the flags they are named for
        assert "avx2" in info["flags"]
    (commit,) = compare.commits_of(None)
    assert len(commit) >= 7 and int(commit, 16) >= 0  # HEAD's short hash


def test_the_up_to_date_check_reads_only_the_branch_targets_and_their_upstream(monkeypatch):
    calls = []
    monkeypatch.setattr(exp_queue, "_dvc", lambda *args: calls.append(args) or '{"teacher": [], "cohort": []}')
    with pytest.raises(InputError, match=r"stage teacher changed\): run `dvc repro distill student_alone` first"):
        exp_queue.check_up_to_date(("distill", "student_alone"))
    assert calls == [("status", "--json", "distill", "student_alone", "--with-deps")]
    monkeypatch.setattr(exp_queue, "_dvc", lambda *args: calls.append(args) or '{"cohort": []}')
    exp_queue.check_up_to_date()  # the cohort alone stale: no experiment reruns an upstream stage for it
    assert calls[-1] == ("status", "--json")


def test_continual_variants_are_paired_with_the_headline_seed_by_seed():
    def run(transfer, average, last):
        return {"method": "m", "transfer": transfer, "average": average, "last": last, "seconds_per_task": 1.0,
                "peak_memory_mb": 1.0, "zero_shot_transfer": 50.0, "matrix": [[1.0, 2.0], [3.0, 4.0]]}

    runs = {"dual_teacher": [run(50, 60, 70), run(52, 61, 69), run(51, 62, 71)],
            "zscl": [run(51, 60, 70), run(53, 60, 70), run(52, 62, 72)]}
    summary = compare_tables.summarise_cl(runs, [0, 1, 2])
    assert summary["headline"] == "dual_teacher" and "vs_headline" not in summary["variants"]["dual_teacher"]
    diff = summary["variants"]["zscl"]["vs_headline"]
    # Transfer: +1 at every seed: no spread, outside the noise; Average: [0, -1, 0] -> -0.33 +- 4.3027 * 0.5774 / sqrt(3)
    assert diff["transfer"]["ci95"] == [1.0, 1.0] and diff["transfer"]["inside_noise"] is False
    assert diff["average"]["mean"] == -0.33 and diff["average"]["ci95"] == [-1.77, 1.1] and diff["average"]["inside_noise"]
    table = compare_tables.markdown_paired(summary)
    assert "| zscl | +1.00 [+1.00, +1.00] | -0.33 [-1.77, +1.10] (noise) |" in table


def test_jobs_fill_the_cores_at_the_threads_the_runs_get(monkeypatch):
    """A --set runtime.threads=1 sweep on 2 cores runs 2 experiments at once (params.yaml's 2 threads: 1)."""
    from pipeline.stages.common import load_params
    from pipeline.params import LIBRARIES

    params = load_params(*LIBRARIES)
    params = params.model_copy(update={"compare": params.compare.model_copy(update={"jobs": None}),
                                       "runtime": params.runtime.model_copy(update={"threads": 2})})
    monkeypatch.setattr(compare.os, "cpu_count", lambda: 2)
    assert compare.default_jobs(params) == 1
    assert compare.default_jobs(params, [{"runtime.threads": 2}]) == 1
    assert compare.default_jobs(params, [{"runtime.threads": 1}, {"runtime.threads": 1}]) == 2
    assert compare.default_jobs(params, [{"loss.tau": 0.1}]) == 1  # no override: params.yaml's threads
    pinned = params.model_copy(update={"compare": params.compare.model_copy(update={"jobs": 3})})
    assert compare.default_jobs(pinned, [{"runtime.threads": 1}]) == 3


@pytest.mark.parametrize("value", [None, 8, 0.01, True, "fashion_mnist", "null", "/data/with space",
                                   ["shufflenet_v2_x0_5", "shufflenet_v2_x0_5"]])
def test_a_tables_command_gives_back_the_values_it_ran_with(value):
    """The command a table records is one a shell runs again: each --set reads back (YAML) to the same value
    (a None printed as `None` read back as the string 'None'; a list's spaces split the argument)."""
    import shlex

    words = shlex.split(compare.set_arg("target.test_per_class", value))
    assert words[0] == "--set" and len(words) == 2
    assert compare.parse_sets([words[1]], "t") == {"target.test_per_class": value}
