"""The selection protocol: a validation split carved from the training images, task orders, each method's
grid queued as search runs, and a choice that reads validation metrics only."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from pipeline.tools import exp_queue, search
from pipeline.tools import params_edit as editing
from pipeline.tools import selection as sel
from pipeline.params import Params, ParamsError
from pipeline.data.domains import build_domain_task
from pipeline.data.validation import carve_validation
from pipeline.errors import InputError


def _params(**compare_changes) -> Params:
    raw = Params.load().model_dump(mode="json")
    raw["compare"].update(compare_changes)
    return Params.from_dict(raw)


# --- the validation split ----------------------------------------------------------------------------------

def test_validation_is_carved_from_the_training_images_and_the_test_split_is_dropped():
    task = build_domain_task("shapes", image_size=16, train_per_class=10, test_per_class=3, seed=0)
    carved = carve_validation(task, 4, seed=0)
    assert carved.train_labels.bincount().tolist() == [6] * 5 and carved.test_labels.bincount().tolist() == [4] * 5
    rows = lambda x: {bytes(r.numpy().tobytes()) for r in x}  # noqa: E731
    train, val, test = rows(carved.train_images), rows(carved.test_images), rows(task.test_images)
    assert not train & val and (train | val) == rows(task.train_images)  # a partition of the training images
    assert not val & test and not train & test  # no test image is left anywhere
    assert carve_validation(task, 0, seed=0) is task  # the default: the task as built
    assert torch.equal(carve_validation(task, 4, seed=0).test_images, carved.test_images)  # seeded
    with pytest.raises(InputError, match=r"data.val_per_class: 10 .* task 'shapes'"):
        carve_validation(task, 10, seed=0)


# --- orders and grids ----------------------------------------------------------------------------------------

def test_the_selection_order_is_the_default_chain_and_the_held_out_order_another():
    params = Params.load()
    c = params.compare
    assert c.selection_order != c.held_out_order
    chain = {f"tasks.{t}.prev": link.prev for t, link in params.tasks.items()}
    assert sel.order_overrides(params, c.selection_order) == chain  # the default pipeline's order: unchanged
    held_out = params.with_overrides(sel.order_overrides(params, c.held_out_order))
    assert held_out.task_names == c.orders[c.held_out_order] != params.task_names
    with pytest.raises(ParamsError, match="--order: 'nope' is not in compare.orders"):
        sel.order_overrides(params, "nope")
    bad = _params(orders={**c.orders, "short": ["digits", "flowers"]})
    with pytest.raises(ParamsError, match="compare.orders.short"):
        sel.order_overrides(bad, "short")


def test_grid_and_point_names():
    assert sel.grid({"loss.a": [1, 2], "loss.b": [0.1, 0.5]}) == [
        {"loss.a": 1, "loss.b": 0.1}, {"loss.a": 1, "loss.b": 0.5}, {"loss.a": 2, "loss.b": 0.1}, {"loss.a": 2, "loss.b": 0.5}]
    assert sel.grid({}) == [{}]
    assert sel.point_name({"loss.dis_weight": 0.2, "loss.tau": 1.0}) == "dis_weight0.2-tau1.0"


def test_every_method_gets_its_grid_on_validation_data_in_the_selection_order():
    params = Params.load()
    c = params.compare
    runs = search.search_runs(params, list(c.search), [0, 1])
    assert len(runs) == 2 * sum(len(sel.grid(space)) for space in c.search.values())
    for name, (variant, point, seed, sets) in runs.items():
        assert sets["data.val_per_class"] > 0 and all(sets[k] == v for k, v in point.items())
        assert params.with_overrides(sets).task_names == c.orders[c.selection_order]
        assert sets["train.method"] == c.variants[variant]["train.method"] and sets["pretrain.seed"] == seed
    for space in c.search.values():  # the same small search for each: 3-4 values of 1-2 keys, one more where grown
        assert 1 <= len(space) <= 2 and all(3 <= len(v) <= 5 for v in space.values())
    with pytest.raises(ParamsError, match="data.val_per_class > 0"):
        search.search_runs(_params(search_setting={}), ["lwf"], [0])
    with pytest.raises(ParamsError, match="held-out order too"):
        search.search_runs(_params(held_out_order=c.selection_order), ["lwf"], [0])
    with pytest.raises(ParamsError, match=r"compare.search.lwf at kd_weight-1"):
        search.search_runs(_params(search={"lwf": {"loss.kd_weight": [-1]}}, refine={}), ["lwf"], [0])


# --- the choice ---------------------------------------------------------------------------------------------

def _run(variant, point, seed, average, val=20, order=None):
    params = Params.load().model_dump(mode="json")
    params["data"]["val_per_class"] = val
    if order:
        params["tasks"] = {t: {"prev": p} for t, p in zip(order, ["e0", *order[:-1]])}
    return sel.Run(f"sel-{variant}-{sel.point_name(point)}-s{seed}", variant, point, seed, params,
                   {"transfer": 0.0, "average": average, "last": 0.0})


def test_the_choice_is_the_best_mean_over_seeds_of_the_validation_metric():
    a, b = {"loss.kd_weight": 0.5}, {"loss.kd_weight": 1.0}
    runs = [_run("lwf", a, 0, 60.0), _run("lwf", a, 1, 50.0), _run("lwf", b, 0, 56.0), _run("lwf", b, 1, 56.0)]
    chosen = sel.choose(runs, "average")
    entry = chosen["variants"]["lwf"]
    assert entry["chosen"] == b and entry["score"] == 56.0 and chosen["split"] == "validation"
    assert entry["points"]["kd_weight0.5"]["mean"] == 55.0 and entry["points"]["kd_weight0.5"]["std"] == 7.07
    tie = sel.choose([_run("lwf", a, 0, 56.0), _run("lwf", b, 0, 56.0)], "average")
    assert tie["variants"]["lwf"]["chosen"] == a  # the first of equals, in grid order
    # one seed: no std (not a spread of 0), and the table gives the value alone
    assert tie["variants"]["lwf"]["points"]["kd_weight0.5"]["std"] is None
    assert "| lwf | **kd_weight0.5** | **56.00** |" in sel.markdown(tie)
    assert "**kd_weight1.0**" in sel.markdown(chosen) and "validation average" in sel.markdown(chosen)
    # the other metrics are kept beside the choice, and do not move it
    runs[0] = sel.Run(runs[0].name, "lwf", a, 0, runs[0].params, {"transfer": 90.0, "average": 60.0, "last": 10.0})
    entry = sel.choose(runs, "average")["variants"]["lwf"]
    assert entry["chosen"] == b and entry["points"]["kd_weight0.5"]["others_mean"] == {"transfer": 45.0, "last": 5.0}
    assert "| lwf | kd_weight0.5 | 55.00 ± 7.07 | 45.00 | 5.00 | 0, 1 |" in sel.markdown(sel.choose(runs, "average"))


def test_the_choice_never_reads_test_metrics_or_the_held_out_order():
    point = {"loss.kd_weight": 1.0}
    with pytest.raises(InputError, match="validation metrics only: run sel-lwf-kd_weight1.0-s0 was evaluated on the test split"):
        sel.choose([_run("lwf", point, 0, 99.0, val=0)], "average")  # only test metrics: refused, not ranked
    with pytest.raises(InputError, match="validation metrics only"):  # one test run among validation runs: refused
        sel.choose([_run("lwf", point, 0, 50.0), _run("lwf", {"loss.kd_weight": 2.0}, 0, 99.0, val=0)], "average")
    held_out = Params.load().compare.orders["order_2"]
    with pytest.raises(InputError, match="never reads the held-out order"):
        sel.choose([_run("lwf", point, 0, 50.0, order=held_out)], "average", held_out)


def test_a_search_run_is_read_from_its_own_params_and_validation_metrics_only(monkeypatch):
    """read_run asks its experiment's commit for params.yaml and metrics/cl.json, nothing else."""
    asked = []

    def git_text(rev, path, name):
        asked.append(Path(path).as_posix())
        if Path(path).name == "params.yaml":
            return yaml.safe_dump(_run("lwf", {}, 0, 0.0).params)
        return '{"transfer": 1.0, "average": 2.0, "last": 3.0}'

    monkeypatch.setattr(exp_queue, "git_text", git_text)
    run = search.read_run("sel-lwf-defaults-s0", "abc1234", "lwf", {}, 0)
    assert asked == ["params.yaml", "metrics/cl.json"] and run.metrics["average"] == 2.0
    assert sel.choose([run], "average")["variants"]["lwf"]["score"] == 2.0


def test_apply_writes_the_chosen_values_into_the_comparison_variants(tmp_path, monkeypatch):
    shutil.copy("params.yaml", tmp_path / "params.yaml")
    chosen = {"variants": {"lwf": {"chosen": {"loss.kd_weight": 0.5, "loss.kd_temperature": 1.0}}}}  # not committed ones
    search.apply(chosen, tmp_path / "params.yaml")
    text = (tmp_path / "params.yaml").read_text()
    assert "# The selection protocol" in text  # comments kept
    line = next(x for x in text.splitlines() if x.startswith("    lwf: {train.method"))  # the variant, not its grid
    assert "train.method: lwf" in line and "loss.kd_weight: 0.5" in line and "loss.kd_temperature: 1.0" in line
    # the variant's line alone changed: every other line (nulls, long lines, comments) byte for byte
    committed = Path("params.yaml").read_text().splitlines()
    changed = [(a, b) for a, b in zip(committed, text.splitlines()) if a != b]
    assert len(committed) == len(text.splitlines()) and [a.split(":")[0] for a, _ in changed] == ["    lwf"]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "images").mkdir()
    after = Params.load(tmp_path / "params.yaml")
    assert after.compare.variants["lwf"] == {"train.method": "lwf", "loss.kd_weight": 0.5, "loss.kd_temperature": 1.0}
    before = Params.load(Path(__file__).resolve().parent.parent / "params.yaml")
    assert after.loss == before.loss and after.compare.variants["zscl"] == before.compare.variants["zscl"]


def test_default_writes_the_default_variants_chosen_values_into_its_own_keys(tmp_path):
    """`--default`: the variant whose overrides are params.yaml's own values (dual_teacher) gives the loss section
    its chosen values, the one line of each changed value; a variant of other params is never the default's."""
    shutil.copy("params.yaml", tmp_path / "params.yaml")
    doc = yaml.safe_load((tmp_path / "params.yaml").read_text())
    assert search.default_variant(doc) == "dual_teacher"
    doc["compare"]["variants"]["dual_teacher"]["loss.dis_weight"] = 0.5  # after --apply: still the default's
    assert search.default_variant(doc) == "dual_teacher"
    chosen = {"variants": {"dual_teacher": {"chosen": {"loss.dis_weight": 0.5, "loss.tau": doc["loss"]["tau"]}}}}
    changed = search.set_default(chosen, "dual_teacher", tmp_path / "params.yaml")
    assert changed == {"loss.dis_weight": (doc["loss"]["dis_weight"], 0.5)}  # tau was the default's already
    lines = zip(Path("params.yaml").read_text().splitlines(), (tmp_path / "params.yaml").read_text().splitlines())
    assert [b for a, b in lines if a != b] == ["  dis_weight: 0.5"]
    doc["train"]["method"] = "ewc"  # params no variant runs: no default's variant
    assert search.default_variant(doc) is None
    assert editing.edit(tmp_path / "params.yaml", {"loss.dis_weight": 0.5}) == {}  # unchanged: not rewritten
    with pytest.raises(KeyError, match="no key loss.nope"):
        editing.edit(tmp_path / "params.yaml", {"loss.nope": 1})


def test_default_refuses_a_search_without_the_defaults_variant_before_any_run(monkeypatch, capsys):
    monkeypatch.setattr(exp_queue, "_dvc", lambda *a: pytest.fail("nothing may be queued"))
    monkeypatch.setattr(search, "earlier_selection", lambda params: None)  # not the committed selection's choices
    with pytest.raises(SystemExit) as info:
        search.main(["--default", "--variants", "lwf"])
    assert info.value.code == 2 and "--default: the default's variant 'dual_teacher' is not searched" in capsys.readouterr().err


def test_a_search_of_some_variants_keeps_the_others_of_the_same_protocol():
    """Variants searched one at a time (each committed as it ends) gather in one selection, each with its own
    command and commit; a selection of another protocol (setting, order, metric) is replaced whole."""
    point = {"loss.kd_weight": 1.0}
    head = {"order": "order_1", "setting": {"data.val_per_class": 20}}
    lwf = sel.choose([_run("lwf", point, 0, 50.0)], "average") | head
    lwf["variants"]["lwf"] |= {"command": "python -m pipeline.tools.search --variants lwf", "baseline": "abc1234",
                               "seconds": 600}
    zscl = sel.choose([_run("zscl", {"loss.zscl_weight": 1.0}, 0, 40.0)], "average") | head
    zscl["variants"]["zscl"] |= {"command": "python -m pipeline.tools.search --variants zscl", "baseline": "def5678",
                                 "seconds": None}
    both = sel.merge(lwf, zscl, ["zscl", "lwf"])
    assert list(both["variants"]) == ["zscl", "lwf"] and both["variants"]["lwf"] == lwf["variants"]["lwf"]
    table = sel.markdown(both)
    assert "- lwf: `python -m pipeline.tools.search --variants lwf` on abc1234, 600 s" in table
    assert "- zscl: `python -m pipeline.tools.search --variants zscl` on def5678" in table
    again = sel.choose([_run("lwf", point, 0, 55.0)], "average") | head  # a variant searched again: replaced
    assert sel.merge(both, again, ["zscl", "lwf"])["variants"]["lwf"]["score"] == 55.0
    other = zscl | {"setting": {"data.val_per_class": 10}}
    assert list(sel.merge(lwf, other, ["zscl", "lwf"])["variants"]) == ["zscl"]
    assert list(sel.merge(None, lwf, ["lwf"])["variants"]) == ["lwf"]


def test_from_file_applies_the_committed_selection_and_runs_nothing(tmp_path, monkeypatch, capsys):
    """Variants searched one at a time on earlier commits: --from-file writes the choices metrics/selection.json
    holds (all its variants) with no run queued or read; a missing file, or one of another protocol, is one line."""
    shutil.copy("params.yaml", tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "images").mkdir()
    monkeypatch.setattr(exp_queue, "_dvc", lambda *a: pytest.fail("nothing may be queued or read"))
    with pytest.raises(SystemExit) as info:
        search.main(["--from-file", "--apply"])
    assert info.value.code == 2 and "--from-file: metrics/selection.json does not exist" in capsys.readouterr().err
    (tmp_path / "metrics").mkdir()
    params = Params.load()
    chosen = {"dual_teacher": {"loss.dis_weight": 0.5, "loss.tau": 0.1},
              "lwf": {"loss.kd_weight": 2.0, "loss.kd_temperature": 1.0}}
    doc = {**search.protocol(params), "variants": {v: {"points": {}, "chosen": c, "score": 1.0} for v, c in chosen.items()}}
    (tmp_path / "metrics" / "selection.json").write_text(json.dumps({**doc, "order": "order_2"}))
    with pytest.raises(SystemExit) as info:
        search.main(["--from-file", "--apply"])
    assert info.value.code == 2 and "was chosen by another protocol" in capsys.readouterr().err
    (tmp_path / "metrics" / "selection.json").write_text(json.dumps(doc))
    search.main(["--from-file", "--apply", "--default", "--variants", "lwf"])  # the default's variant is in the file
    after = yaml.safe_load((tmp_path / "params.yaml").read_text())
    assert after["compare"]["variants"]["lwf"] == {"train.method": "lwf", **chosen["lwf"]}
    assert after["loss"]["dis_weight"] == 0.5 and after["loss"]["tau"] == 0.1


def test_an_extended_grid_runs_only_its_new_points_and_the_earlier_choice_again():
    """A grid grown outward (its choice was on the edge) keeps the earlier entry's points measured at the same
    seeds, runs the new ones and the earlier choice again, and chooses over them all; if the earlier choice gives
    another value here, the code under the earlier points changed and the extension is refused."""
    a, b, c = {"loss.kd_weight": 1.0}, {"loss.kd_weight": 2.0}, {"loss.kd_weight": 4.0}
    earlier = sel.choose([_run("lwf", a, 0, 50.0), _run("lwf", b, 0, 55.0)], "average")["variants"]["lwf"]
    earlier |= {"command": "python -m pipeline.tools.search --variants lwf", "baseline": "abc1234"}
    names = [sel.point_name(p) for p in (a, b, c)]
    assert sel.kept_points(earlier, names, [0]) == ["kd_weight1.0"]  # not the choice (run again), not other seeds
    assert sel.kept_points(earlier, names, [0, 1]) == []
    new = sel.choose([_run("lwf", b, 0, 55.0), _run("lwf", c, 0, 56.0)], "average")["variants"]["lwf"]
    entry = sel.extend(earlier, new, names, "lwf")
    assert list(entry["points"]) == names and entry["chosen"] == c and entry["score"] == 56.0
    assert entry["kept"] == {"points": ["kd_weight1.0"], "command": earlier["command"], "baseline": "abc1234"}
    lower = sel.choose([_run("lwf", b, 0, 55.0), _run("lwf", c, 0, 54.0)], "average")["variants"]["lwf"]
    assert sel.extend(earlier, lower, names, "lwf")["chosen"] == b  # the earlier choice may stand
    moved = sel.choose([_run("lwf", b, 0, 55.5), _run("lwf", c, 0, 56.0)], "average")["variants"]["lwf"]
    with pytest.raises(InputError, match=r"--extend: lwf's earlier choice kd_weight2.0 gave \[55.5\] here and \[55.0\] on abc1234"):
        sel.extend(earlier, moved, names, "lwf")
    table = sel.markdown({"metric": "average", "variants": {"lwf": entry | {"command": "python -m pipeline.tools.search "
                                                                           "--variants lwf --extend", "baseline": "def5678"}}})
    assert "1 points kept from `python -m pipeline.tools.search --variants lwf` on abc1234" in table


def _queued_by_extend(monkeypatch, params, variant, earlier) -> dict:
    """The runs `search --extend --seeds 0` queues for `variant` (stopped there: nothing runs)."""
    queued = {}

    def run_queued(runs, jobs, targets, resume):
        queued.update(runs)
        raise SystemExit("stop after queueing")

    monkeypatch.setattr(exp_queue, "check_up_to_date", lambda targets: None)
    monkeypatch.setattr(exp_queue, "run_queued", run_queued)
    args = search.argparse.Namespace(seeds=[0], extend=True, collect=False, jobs=1, resume=False, rev=None)
    with pytest.raises(SystemExit):
        search.search(params, args, [variant], "cmd", earlier)
    return queued


def test_extend_queues_only_the_new_points_and_the_earlier_choice(monkeypatch):
    params = Params.load()
    monkeypatch.setitem(params.compare.search, "lwf", {"loss.kd_weight": [1.0, 2.0, 4.0]})
    earlier = {"variants": {"lwf": sel.choose([_run("lwf", {"loss.kd_weight": 1.0}, 0, 50.0),
                                               _run("lwf", {"loss.kd_weight": 2.0}, 0, 55.0)], "average")["variants"]["lwf"]}}
    queued = _queued_by_extend(monkeypatch, params, "lwf", earlier)
    assert sorted(queued) == ["sel-lwf-kd_weight2.0-s0", "sel-lwf-kd_weight4.0-s0"]
    with pytest.raises(ParamsError, match="--extend: metrics/selection.json holds no lwm chosen by this protocol"):
        _queued_by_extend(monkeypatch, params, "lwm", earlier)


def test_refine_tries_each_idea_alone_at_the_earlier_choice(monkeypatch):
    """compare.refine (issue 33, item 7): each idea's values at the grid's choice, queued by --extend beside the
    choice run again; the grid's point comes first, so a tie keeps it."""
    chosen = {"loss.dis_weight": 0.2, "loss.tau": 0.1}
    assert sel.refinements(chosen, {"loss.dual_ensemble_every": [0, 10], "loss.tau": [0.1]}) == [
        {**chosen, "loss.dual_ensemble_every": 0}, {**chosen, "loss.dual_ensemble_every": 10}]
    assert sel.refinements({**chosen, "loss.dual_ensemble_every": 0}, {"loss.dual_ensemble_every": [0, 10]}) == [
        {**chosen, "loss.dual_ensemble_every": 10}]  # the choice's own value is the choice: not run twice
    params = Params.load()
    monkeypatch.setitem(params.compare.search, "dual_teacher", {"loss.dis_weight": [0.1, 0.2], "loss.tau": [0.1]})
    monkeypatch.setitem(params.compare.refine, "dual_teacher", {"loss.dual_ensemble_every": [10]})
    a, b = {"loss.dis_weight": 0.1, "loss.tau": 0.1}, chosen
    earlier = {"variants": {"dual_teacher": sel.choose([_run("dual_teacher", a, 0, 60.0), _run("dual_teacher", b, 0, 64.0)],
                                                       "average")["variants"]["dual_teacher"]}}
    assert sel.point_name(search.points(params, "dual_teacher")[-1]) == "dis_weight0.2-tau0.1"  # no entry: the grid
    queued = _queued_by_extend(monkeypatch, params, "dual_teacher", earlier)
    assert sorted(queued) == ["sel-dual_teacher-dis_weight0.2-tau0.1-dual_ensemble_every10-s0",
                              "sel-dual_teacher-dis_weight0.2-tau0.1-s0"]
    assert queued["sel-dual_teacher-dis_weight0.2-tau0.1-dual_ensemble_every10-s0"]["loss.dual_ensemble_every"] == 10
    idea = {**b, "loss.dual_ensemble_every": 10}
    names = [sel.point_name(p) for p in search.points(params, "dual_teacher", earlier["variants"]["dual_teacher"])]
    tie = sel.choose([_run("dual_teacher", b, 0, 64.0), _run("dual_teacher", idea, 0, 64.0)], "average")
    assert sel.extend(earlier["variants"]["dual_teacher"], tie["variants"]["dual_teacher"], names,
                      "dual_teacher")["chosen"] == b
    monkeypatch.setitem(params.compare.refine, "lwm_typo", {"loss.lwm_beta": [1.0]})
    with pytest.raises(ParamsError, match="compare.refine.lwm_typo: not in compare.search"):
        search.search_runs(params, ["dual_teacher"], [0])


def test_extend_finds_the_earlier_choice_in_a_file_that_sorted_its_keys(monkeypatch):
    """metrics/selection.json sorts keys (kd_temperature before kd_weight) while the grid's names keep the grid's
    order: the earlier choice is found by value, run again, and not kept."""
    params = Params.load()
    monkeypatch.setitem(params.compare.search, "lwf", {"loss.kd_weight": [1.0, 2.0], "loss.kd_temperature": [4.0, 8.0]})
    points = [{"loss.kd_weight": w, "loss.kd_temperature": 4.0} for w in (1.0, 2.0)]
    entry = sel.choose([_run("lwf", points[0], 0, 50.0), _run("lwf", points[1], 0, 55.0)], "average")["variants"]["lwf"]
    earlier = {"variants": {"lwf": json.loads(json.dumps(entry, sort_keys=True))}}
    assert sel.chosen_name(earlier["variants"]["lwf"]) == "kd_weight2.0-kd_temperature4.0"
    queued = _queued_by_extend(monkeypatch, params, "lwf", earlier)
    assert sorted(queued) == ["sel-lwf-kd_weight1.0-kd_temperature8.0-s0", "sel-lwf-kd_weight2.0-kd_temperature4.0-s0",
                              "sel-lwf-kd_weight2.0-kd_temperature8.0-s0"]
