"""The README and docs/ keep true: every generated block equals what its file renders, every relative link (and
anchor) resolves, the README stays a page, the figures are DVC plots that open as images, and nothing points
outside the repository. Also the renderer's own parts (views, provenance, the DAG's reduction)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from pipeline.tools import compare_tables, compression_tables
from pipeline.tools import compare_plots, docs

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = docs.documents(ROOT)
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
PNG = b"\x89PNG\r\n\x1a\n"


def prose(text: str) -> str:
    """The text without fenced code and inline code (a link there is not a link)."""
    return re.sub(r"`[^`\n]*`", "", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation but '-' and '_' dropped, spaces to '-'."""
    text = re.sub(r"`", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for heading in re.findall(r"^#+ (.+)$", FENCE.sub("", path.read_text()), re.M):
        base = slug(heading)
        n = seen.get(base, 0)
        out.add(base if n == 0 else f"{base}-{n}")
        seen[base] = n + 1
    return out


def test_the_readme_is_one_page():
    lines = README.read_text().splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; the budget is 250 (move detail to docs/)"
    first = "\n".join(lines[:40])
    for what in ("make repro", "make test", "docs/continual.md", "docs/compression.md", "docs/cohort.md"):
        assert what in first, f"the README's first 40 lines should name {what!r}"
    assert re.search(r"\d+m\d\ds", first), "the README's first 40 lines should give the commands' measured times"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    broken = []
    for target in LINK.findall(prose(page.read_text())):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target} (no heading with anchor #{anchor})")
        elif not str(file).startswith(str(ROOT)):
            broken.append(f"{target} (outside the repository)")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def test_nothing_points_outside_the_repository():
    for page in PAGES:
        assert "shared/spec" not in page.read_text() and "../shared" not in page.read_text(), page


def test_every_generated_block_equals_what_its_file_renders():
    """`python -m pipeline.tools.docs` rewrites them; a hand edit inside a block, or a metrics file changed
    without the block, fails here."""
    assert docs.stale_blocks(ROOT) == [], "run `python -m pipeline.tools.docs`"


def test_every_results_table_is_a_generated_block():
    """A table of results (mean ± std) outside a generated block is a hand-written figure: it goes, or to
    docs/notes/ as a dated probe note."""
    for page in PAGES:
        if "notes" in page.relative_to(ROOT).parts:
            continue
        outside = docs.BLOCK.sub("", page.read_text())
        rows = [line for line in outside.splitlines() if line.startswith("|") and "±" in line]
        assert not rows, f"{page.relative_to(ROOT)}: a results table outside a generated block: {rows[0]}"


def test_the_blocks_name_every_comparison_file():
    named = {m["spec"].split()[0] for page in PAGES for m in docs.BLOCK.finditer(page.read_text())}
    files = {p.relative_to(ROOT).as_posix() for p in (ROOT / "metrics").glob("compare*.json")} - {"metrics/compare_curves.json"}
    files |= {p.relative_to(ROOT).as_posix() for p in (ROOT / "metrics").glob("selection.json")}
    assert files <= named, f"comparison files no page shows: {sorted(files - named)}"
    assert docs.DAG in named


def test_the_comparison_figures_are_dvc_plots_and_images():
    declared = [next(iter(p)) if isinstance(p, dict) else p for p in yaml.safe_load((ROOT / "dvc.yaml").read_text())["plots"]]
    figures = {p.relative_to(ROOT).as_posix() for p in (ROOT / "metrics").glob("compare*.png")}
    assert figures and figures <= set(declared), f"not declared in dvc.yaml plots: {sorted(figures - set(declared))}"
    for figure in figures:
        assert (ROOT / figure).read_bytes()[:8] == PNG, figure


# --- the renderer's parts ------------------------------------------------------------------------------------

def test_a_block_is_rewritten_from_its_file_and_the_rest_is_left(tmp_path):
    (tmp_path / "metrics").mkdir()
    (tmp_path / "docs").mkdir()
    summary = {"seeds": [0, 1], "command": "make compare-cohort", "setting": {"cohort.epochs": 9}, "task": "t",
               "commit": "abc1234", "machine": {"cpu": "X", "cores": 2},
               "variant_overrides": {"alone": {"cohort.method": "alone"}},
               "variants": {"alone": {"method": "alone", "accuracy": {"mean": 80.0, "std": 1.0},
                                      "ensemble": {"mean": 81.0, "std": 0.5}}}}
    (tmp_path / "metrics" / "compare_cohort-x.json").write_text(json.dumps(summary))
    page = tmp_path / "docs" / "page.md"
    page.write_text("intro\n<!-- generated: metrics/compare_cohort-x.json view=short -->\nold | 1 ± 2\n"
                    "<!-- end generated -->\noutro\n")
    (tmp_path / "README.md").write_text("no blocks\n")
    assert docs.stale_blocks(tmp_path) == ["docs/page.md: metrics/compare_cohort-x.json view=short"]
    assert docs.update(tmp_path) == [page]
    text = page.read_text()
    assert text.startswith("intro\n<!-- generated:") and text.endswith("<!-- end generated -->\noutro\n")
    assert "| alone | 80.00 ± 1.00 |  | 81.00 ± 0.50 |" in text and "old" not in text
    assert "[`metrics/compare_cohort-x.json`](../metrics/compare_cohort-x.json)" in text  # relative to the page
    assert "Commit: abc1234." in text and "Machine: cores 2, cpu X." in text
    assert "every row `cohort.epochs=9`; per row alone: `cohort.method=alone`" in text
    assert docs.stale_blocks(tmp_path) == []


def test_the_selection_block_names_each_variants_command_commit_and_the_machine(tmp_path):
    (tmp_path / "metrics").mkdir()
    point = {"point": {"loss.kd_weight": 1.0}, "seeds": [0], "values": [50.0], "mean": 50.0, "std": 0.0,
             "others_mean": {"transfer": 40.0, "last": 60.0}}
    entry = {"points": {"kd_weight1.0": point}, "chosen": {"loss.kd_weight": 1.0}, "score": 50.0,
             "command": "python -m pipeline.tools.search --variants lwf", "baseline": "abc1234", "seconds": 600,
             "machine": {"cpu": "X", "cores": 2}}
    summary = {"metric": "average", "split": "validation", "order": "order_1", "setting": {"data.val_per_class": 20},
               "variants": {"lwf": entry}}
    (tmp_path / "metrics" / "selection.json").write_text(json.dumps(summary))
    (tmp_path / "README.md").write_text("<!-- generated: metrics/selection.json -->\n<!-- end generated -->\n")
    docs.update(tmp_path)
    text = (tmp_path / "README.md").read_text()
    assert "| lwf | **kd_weight1.0** | **50.00** | 40.00 | 60.00 | 0 |" in text
    assert "- lwf: `python -m pipeline.tools.search --variants lwf` on abc1234, 600 s" in text
    assert "every run `data.val_per_class=20`, the tasks in order_1" in text and "Machine: cores 2, cpu X." in text


def test_an_old_file_says_what_it_does_not_record():
    text = docs.provenance({"command": "make compare"}, "metrics/compare.json", "metrics/compare.json")
    assert "Commit: not recorded in the file." in text and "Machine: not recorded in the file." in text
    assert "`compare.variants` (not recorded in the file)" in text


def test_the_short_views_keep_every_row():
    summary = json.loads((ROOT / "metrics" / "compare_distill.json").read_text())
    table = docs.short_distill(summary)
    assert len(table.strip().splitlines()) == 2 + 1 + len({docs._method_name(e) for e in summary["variants"].values()})
    full = compression_tables.markdown_distill(summary)
    for e in summary["variants"].values():
        assert compare_tables._cell(e["accuracy"]) in table and compare_tables._cell(e["accuracy"]) in full


def test_the_dag_keeps_only_the_edges_no_longer_path_implies():
    mermaid = 'flowchart TD\n\tnode1["a"]\n\tnode2["b"]\n\tnode3["c"]\n\tnode1-->node2\n\tnode1-->node3\n\tnode2-->node3\n'
    assert docs.transitive_reduction(docs.dag_edges(mermaid)[1]) == [("node1", "node2"), ("node2", "node3")]
    text = docs.render_dag(mermaid)
    assert 'node1["a"] --> node2["b"]' in text and 'node2["b"] --> node3["c"]' in text and "node1[\"a\"] --> node3" not in text


def test_the_figures_draw_from_a_summary(tmp_path):
    summary = json.loads((ROOT / "metrics" / "compare_ablation.json").read_text())
    compare_plots.ablation_dots(summary, tmp_path / "a.png")
    compare_plots.gains(json.loads((ROOT / "metrics" / "compare_cohort.json").read_text()), tmp_path / "g.png")
    assert (tmp_path / "a.png").read_bytes()[:8] == PNG and (tmp_path / "g.png").read_bytes()[:8] == PNG


def test_default_row_is_the_one_whose_overrides_are_the_committed_params():
    params = {"train": {"method": "dual_teacher", "seed": 0}, "data": {"seed": 0}, "loss": {"tau": 1.0}}
    summary = {"setting": {}, "seed_keys": ["data.seed", "train.seed"],
               "variant_overrides": {"finetune": {"train.method": "finetune"},
                                     "dual_teacher": {"train.method": "dual_teacher", "loss.tau": 1.0}},
               "variants": {"finetune": {"seeds": [0, 1]}, "dual_teacher": {"seeds": [1, 0]}}}
    assert compare_tables.default_row(summary, params) == ("dual_teacher", 0)
    summary["variant_overrides"]["dual_teacher"]["loss.tau"] = 0.5  # the table ran another tau: no row is the default
    assert compare_tables.default_row(summary, params) is None
    summary["variant_overrides"]["dual_teacher"]["loss.tau"] = 1.0
    summary["setting"] = {"data.val_per_class": 20}  # a setting the default does not have
    assert compare_tables.default_row(summary, params) is None


@pytest.mark.xfail(strict=True, reason="metrics/compare.json predates the selection protocol: regenerated by the "
                                       "order-I table (`make compare`) after the search; remove this mark then")
def test_the_default_pipelines_metrics_are_its_row_of_the_committed_comparison():
    """`make repro`'s metrics/cl.json is, byte for byte in its figures, the order-I comparison's row for the same
    params and seed: the table the README shows is the pipeline a user runs, not a stale run of other params."""
    summary = json.loads((ROOT / "metrics/compare.json").read_text())
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    row = compare_tables.default_row(summary, params)
    assert row, "no row of metrics/compare.json runs the committed params.yaml: run `make compare`"
    variant, seed = row
    entry = summary["variants"][variant]
    cl = json.loads((ROOT / "metrics/cl.json").read_text())
    index = entry["seeds"].index(seed)
    assert {m: entry[m]["values"][index] for m in ("transfer", "average", "last")} == \
        {m: cl[m] for m in ("transfer", "average", "last")}
