"""`python -m pipeline.tools.docs`: rewrite every generated block of README.md and docs/**/*.md from its source,
the committed comparison files (metrics/compare*.json) or `dvc dag`; `--check` rewrites nothing and exits 1 naming
each block that differs from what its source renders (the test suite runs the same check).

A block is

    <!-- generated: metrics/compare.json view=short -->
    ...
    <!-- end generated -->

Its text is a function of the source file alone (and of the document's folder, for relative links), so a table in
the docs cannot drift from the numbers it claims: the comparison commands rewrite the blocks that name their file,
and a hand edit inside a block fails the test. Views: `full` (default: the table `pipeline.tools.compare` writes, with its
notes), `short` (the headline columns, for the README). Each table ends with its provenance: the command that ran
it, the commit, the params it changed and the machine, each as the file records it ("not recorded" where an older
file lacks it: never guessed)."""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Callable

from pipeline.tools import compare_tables as tables, compression_tables
from pipeline.tools import selection, travel

BLOCK = re.compile(r"(<!-- generated: (?P<spec>[^>]*?) -->\n)(?P<body>.*?)(<!-- end generated -->)", re.S)
DAG = "dvc-dag"
COMMAND = "python -m pipeline.tools.docs"


def documents(root: Path) -> list[Path]:
    """README.md and every page under docs/."""
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


# --- which table a comparison file holds ---------------------------------------------------------------------

def branch_of(source: str) -> str:
    """metrics/compare.json -> cl, metrics/compare_distill-w3.json -> distill, ...: the file names
    `pipeline.tools.compare` gives its outputs (compare_<branch>[-<tag>].json)."""
    stem = Path(source).stem.split("-")[0]
    return "cl" if stem == "compare" else stem.removeprefix("compare_")


def variants_key(branch: str) -> str:
    return {"cl": "variants", "ablation": "ablation_variants"}.get(branch, f"{branch}_variants")


FULL: dict[str, Callable[[dict], str]] = {
    "cl": tables.markdown_cl, "ablation": tables.markdown_cl, "distill": compression_tables.markdown_distill,
    "token": compression_tables.markdown_token, "cohort": compression_tables.markdown_cohort,
}


def short_cl(summary: dict) -> str:
    lines = ["| method | Transfer | Average | Last |", "|---|---|---|---|",
             f"| E0 zero-shot | {summary['reference']['zero_shot_transfer']:.2f} | | |"]
    for variant, e in summary["variants"].items():
        lines.append(f"| {variant} | " + " | ".join(tables._cell(e[k]) for k in tables.CL_KEYS) + " |")
    return "\n".join(lines) + "\n"


def _method_name(entry: dict) -> str:
    per_image = ", per image" if entry.get("select_per") == "sample" else ""
    return entry["method"] + (f" ({entry['rule']}{per_image})" if entry.get("rule") else "")


def short_distill(summary: dict) -> str:
    """One row per method, one column per student: accuracy, and in brackets the gain over the student alone."""
    students = list(summary["alone"])
    rows: dict[str, dict[str, str]] = {"alone": {s: tables._cell(a["accuracy"]) for s, a in summary["alone"].items()}}
    for e in summary["variants"].values():
        rows.setdefault(_method_name(e), {})[e["student"]] = f"{tables._cell(e['accuracy'])} ({tables._gain_cell(e['gain'])})"
    spread = "95 % interval" if all(e["gain"].get("ci95") for e in summary["variants"].values()) else "± std"
    lines = ["| method | " + " | ".join(f"{s} (gain over alone, {spread})" for s in students) + " |",
             "|---" * (len(students) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(cells.get(s, "") for s in students) + " |" for name, cells in rows.items()]
    return "\n".join(lines) + "\n"


def short_cohort(summary: dict) -> str:
    lines = ["| method | mean network | gain over alone | ensemble |", "|---|---|---|---|"]
    for variant, e in summary["variants"].items():
        gain = tables._gain_cell(e["gain"]) if "gain" in e and e["method"] != "alone" else ""
        lines.append(f"| {variant} | {tables._cell(e['accuracy'])} | {gain} | {tables._cell(e['ensemble'])} |")
    return "\n".join(lines) + "\n"


def bench_steps(summary: dict) -> str:
    """metrics/bench_steps.json (`make bench-steps`): every method's training step of one network (or cohort), the
    methods stepped in turns in one process; medians, the periodic work (rematching, meta steps) amortised."""
    groups = [(f"{s['student']} (batch {s['batch_size']})", s["variants"]) for s in summary.get("distill", {}).get("students", {}).values()]
    if "cohort" in summary:
        c = summary["cohort"]
        groups.append((f"cohort {' + '.join(c['networks'])} (batch {c['batch_size']})", c["variants"]))
    lines = ["| network | variant | step (ms), median [q1, q3] | periodic work | amortised (ms) | / reference |",
             "|---|---|---|---|---|---|"]
    for name, variants in groups:
        for i, (variant, e) in enumerate(variants.items()):
            ratio = next((f"{v:.2f} ({k.removeprefix('per_')})" for k, v in e.items() if k.startswith("per_")), "")
            periodic = (f"{e.get('rematch_ms', e.get('meta_step_ms', 0)):.0f} ms every {e['every_steps']} steps"
                        if "every_steps" in e else "")
            lines.append(f"| {name if i == 0 else ''} | {variant} | {e['median_ms']:.1f} [{e['q1_ms']:.1f}, "
                         f"{e['q3_ms']:.1f}] | {periodic} | {e['amortised_ms']:.1f} | {ratio} |")
    setup = summary.get("setup", {})
    lines += ["", f"{setup.get('rounds')} rounds after {setup.get('warmup')} warm-up steps, {setup.get('threads')} "
                  f"threads, task `{setup.get('task')}`."]
    return "\n".join(lines) + "\n"


SHORT: dict[str, Callable[[dict], str]] = {"cl": short_cl, "ablation": short_cl, "distill": short_distill,
                                            "cohort": short_cohort}


def _value(v: object) -> str:
    if isinstance(v, list):  # the CPU's flags
        return "+".join(map(str, v)) or "none"
    return "null" if v is None else str(v)


def machine_text(machine: object) -> str:
    if not machine:
        return "not recorded in the file"
    if isinstance(machine, dict):
        return ", ".join(f"{k} {_value(v)}" for k, v in sorted(machine.items()))
    return str(machine)


def provenance(summary: dict, source: str, link: str) -> str:
    """Where the table comes from, as far as its file says: the command, commit, params changed, machine."""
    branch = branch_of(source)
    setting = summary.get("setting") or {}
    overrides = summary.get("variant_overrides")
    diff = ("every row " + ", ".join(f"`{k}={_value(v)}`" for k, v in setting.items())) if setting else "no shared setting"
    if overrides is not None:
        diff += "; per row " + "; ".join(f"{v}: " + (", ".join(f"`{k}={_value(x)}`" for k, x in o.items()) or "none")
                                         for v, o in overrides.items())
    else:
        diff += f"; per row the variant's overrides in `params.yaml` `compare.{variants_key(branch)}` (not recorded in the file)"
    commit = summary.get("commit") or "not recorded in the file"
    return (f"Generated by `{COMMAND}` from [`{source}`]({link}). Command: `{summary.get('command', 'not recorded')}`. "
            f"Commit: {commit}. Params changed: {diff}. Machine: {machine_text(summary.get('machine'))}.\n")


def bench_provenance(summary: dict, source: str, link: str) -> str:
    setup = summary.get("setup", {})
    machine = {k: setup[k] for k in ("machine", "torch") if k in setup}
    return (f"Generated by `{COMMAND}` from [`{source}`]({link}). Command: `make bench-steps`. Commit: "
            f"{summary.get('commit') or 'not recorded in the file'}. Machine: {machine_text(machine)}.\n")


# --- the DAG ---------------------------------------------------------------------------------------------------

def dag_edges(mermaid: str) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """Nodes (id -> stage) and edges of `dvc dag --md`'s mermaid flowchart."""
    nodes = dict(re.findall(r'^\s*(\w+)\["([^"]+)"\]\s*$', mermaid, re.M))
    edges = re.findall(r"^\s*(\w+)-->(\w+)\s*$", mermaid, re.M)
    return nodes, edges


def transitive_reduction(edges: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The edges no longer path implies: prepare -> train@digits goes when prepare -> ... -> train@digits exists."""
    succ: dict[str, set[str]] = {}
    for a, b in edges:
        succ.setdefault(a, set()).add(b)

    def reachable(start: str, skip: tuple[str, str]) -> set[str]:
        seen, stack = set(), [start]
        while stack:
            node = stack.pop()
            for nxt in succ.get(node, ()):
                if (node, nxt) != skip and nxt not in seen:
                    seen.add(nxt)
                    stack.append(nxt)
        return seen

    return [(a, b) for a, b in edges if b not in reachable(a, (a, b))]


def topological_rank(nodes: list[str], edges: list[tuple[str, str]]) -> dict[str, int]:
    """Each node's place in a topological order (Kahn's; ties in `dvc dag`'s order), so the edges read from the
    first stage to the last."""
    indegree = {n: 0 for n in nodes}
    for _, b in edges:
        indegree[b] += 1
    ready, rank = [n for n in nodes if indegree[n] == 0], {}
    while ready:
        node = ready.pop(0)
        rank[node] = len(rank)
        for a, b in edges:
            if a == node:
                indegree[b] -= 1
                if indegree[b] == 0:
                    ready.append(b)
        ready.sort(key=nodes.index)
    return rank


def render_dag(mermaid: str) -> str:
    nodes, edges = dag_edges(mermaid)
    kept = transitive_reduction(edges)
    rank = topological_rank(list(nodes), kept)
    kept.sort(key=lambda e: (rank[e[0]], rank[e[1]]))
    lines = ["```mermaid", "flowchart LR"]
    lines += [f'  {a}["{nodes[a]}"] --> {b}["{nodes[b]}"]' for a, b in kept]
    lines += ["```", f"Generated by `{COMMAND}` from `dvc dag --md` (edges that a longer path implies left out; "
                     f"`dvc dag` draws them all)."]
    return "\n".join(lines) + "\n"


def dvc_dag(root: Path) -> str:
    return subprocess.run([sys.executable, "-m", "dvc", "dag", "--md"], cwd=root, check=True, capture_output=True,
                          text=True).stdout


# --- blocks ----------------------------------------------------------------------------------------------------

def render(spec: str, document: Path, root: Path, dag: Callable[[], str]) -> str:
    """The text of one block of `document`."""
    source, *options = spec.split()
    opts = dict(o.split("=", 1) for o in options)
    if source == DAG:
        return render_dag(dag())
    path = root / source
    if not path.is_file():
        raise FileNotFoundError(f"{document.relative_to(root)}: generated block names {source}, which does not exist")
    summary = json.loads(path.read_text())
    link = Path(os.path.relpath(path, document.parent)).as_posix()
    if Path(source).stem == "bench_steps":
        return bench_steps(summary) + "\n" + bench_provenance(summary, source, link)
    if Path(source).stem == "travel":
        return travel.markdown(summary) + "\n" + (
            f"Generated by `{COMMAND}` from [`{source}`]({link}). Command: `{summary['command']}`. Commit: "
            f"{summary['commit']}. Machine: {machine_text(summary['machine'])}.\n")
    if Path(source).stem == "selection":
        machines = dict.fromkeys(machine_text(e.get("machine")) for e in summary["variants"].values())
        setting = ", ".join(f"`{k}={_value(v)}`" for k, v in summary["setting"].items())
        return selection.markdown(summary) + "\n" + (
            f"Generated by `{COMMAND}` from [`{source}`]({link}). Commands and commits: per variant, above. Params "
            f"changed: every run {setting}, the tasks in {summary['order']}; per run its variant's overrides in "
            f"`params.yaml` `compare.variants` and its grid point. Machine: {'; '.join(machines)}.\n")
    branch = branch_of(source)
    view = opts.get("view", "full")
    table = (SHORT if view == "short" else FULL)[branch](summary)
    return table + "\n" + provenance(summary, source, link)


def rewrite(text: str, document: Path, root: Path, dag: Callable[[], str], only: str | None = None) -> str:
    """`text` with every block (or only those naming `only`) re-rendered."""
    def block(m: re.Match) -> str:
        if only is not None and m["spec"].split()[0] != only:
            return m[0]
        return m[1] + render(m["spec"], document, root, dag) + m[4]
    return BLOCK.sub(block, text)


def cached_dag(root: Path) -> Callable[[], str]:
    memo: list[str] = []

    def get() -> str:
        if not memo:
            memo.append(dvc_dag(root))
        return memo[0]
    return get


def stale_blocks(root: Path) -> list[str]:
    """'document: spec' of every block whose text differs from what its source renders."""
    dag, out = cached_dag(root), []
    for doc in documents(root):
        text = doc.read_text()
        for m in BLOCK.finditer(text):
            if m["body"] != render(m["spec"], doc, root, dag):
                out.append(f"{doc.relative_to(root)}: {m['spec']}")
    return out


def update(root: Path = Path("."), only: str | None = None) -> list[Path]:
    """Rewrite the blocks (those naming `only`, else all) in place; the documents changed."""
    from pipeline import io

    dag, changed = cached_dag(root), []
    for doc in documents(root):
        if not doc.is_file():
            continue
        text = doc.read_text()
        new = rewrite(text, doc, root, dag, only)
        if new != text:
            io.write_text(doc, new)
            changed.append(doc)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="rewrite nothing; exit 1 naming each block that differs")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_blocks(Path("."))
        for line in stale:
            print(f"differs from its source: {line}")
        return 1 if stale else 0
    for doc in update():
        print(f"rewrote {doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
