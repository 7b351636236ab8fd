"""DVC's experiment queue, as the comparison and search commands use it: queue one `dvc exp run --queue` per
run, start the workers, wait, and read each experiment's files back from its commit (`dvc exp show --json`
names them). Nothing here knows a branch or a table (pipeline/tools/compare.py does)."""
from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

from pipeline.errors import InputError
from pipeline.tools import compare_tables as tables


def _dvc(*args: str) -> str:
    return subprocess.run(["dvc", *args], check=True, capture_output=True, text=True).stdout


def check_up_to_date(targets: tuple[str, ...] = ()) -> None:
    """Queued experiments check the upstream outputs out of the cache as dvc.lock records them: a stale
    workspace pipeline would make every experiment re-run its changed stages. Only `targets` and what they
    need are checked (the whole DAG where none are named): a compression table needs no continual chain."""
    changed = json.loads(_dvc("status", "--json", *((*targets, "--with-deps") if targets else ())) or "{}")
    # The cohort stage is outside `make repro` (`make cohort`) and upstream of no stage: stale, it costs no
    # experiment an upstream run (the cohort's own experiments re-run it anyway).
    changed.pop("cohort", None)
    if changed:
        how = f"dvc repro {' '.join(targets)}" if targets else "make repro"
        raise InputError(f"the pipeline is not up to date (stage {', '.join(sorted(changed))} changed): "
                         f"run `{how}` first")


def queue_status() -> dict[str, str]:
    """Name -> status (Queued, Running, Success, Failed) of the tasks `dvc queue status` lists."""
    return _queue_report()[0]


def _queue_report() -> tuple[dict[str, str], int | None]:
    """`dvc queue status`: each task's status by name, and how many workers are busy (None: not said)."""
    status, busy = {}, None
    for line in _dvc("queue", "status").splitlines():
        fields = line.split()
        if len(fields) >= 3 and re.fullmatch(r"[0-9a-f]{7}", fields[0]):
            status[fields[1]] = fields[-1]
        elif found := re.match(r"Worker status: (\d+) active", line.strip()):
            busy = int(found.group(1))
    return status, busy


def experiments(revs: list[str] | None = None) -> dict[str, str]:
    """Name -> commit of each experiment of HEAD, or of the baseline commits `revs` (`dvc exp show --json
    --rev ...`; a name in several: the last baseline's)."""
    found = {}
    for baseline in json.loads(_dvc("exp", "show", "--json", *(a for r in revs or [] for a in ("--rev", r)))):
        for exp in baseline.get("experiments") or []:
            for rev in exp.get("revs") or []:
                if rev.get("name"):
                    found[rev["name"]] = rev["rev"]
    return found


def git_text(rev: str, path: Path, name: str) -> str:
    """A file of experiment `name`'s commit `rev`."""
    proc = subprocess.run(["git", "show", f"{rev}:{Path(path).as_posix()}"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise InputError(f"experiment {name}: no {Path(path).as_posix()} in its commit {rev[:7]}")
    return proc.stdout


def reader(name: str, rev: str) -> tables.Reader:
    """Reads a metrics file from an experiment's commit, whole: `dvc exp show` keeps only the numbers of a
    metrics file, not the accuracy matrix's lists."""
    def read(path: Path) -> dict:
        return json.loads(git_text(rev, path, name))

    return read


def stages_run(name: str) -> list[str]:
    """The stages an experiment ran (not checked out of the cache), from its log."""
    return re.findall(r"^Running stage '([^']+)'", _dvc("queue", "logs", name), re.MULTILINE)


# Between two looks at the queue: each `dvc queue status` costs about a second of CPU, which the experiments'
# step times would pay for (every 5 s it was a fifth of a core on a 2-core machine). The wait grows with the time
# waited, from 2 s to POLL_SECONDS: a queue of seconds-long runs is not left idle for half a minute, and one of
# hours is looked at twice a minute.
POLL_SECONDS = 30


def poll_wait(waited: float) -> float:
    """Seconds until the next look at the queue, `waited` seconds after the queue started."""
    return min(POLL_SECONDS, 2 + waited / 10)


def run_queued(runs: dict[str, dict[str, object]], jobs: int, targets: tuple[str, ...] = (), resume: bool = False) -> int:
    """Queue one experiment per name (replacing an earlier one of that name) reproducing `targets` (default:
    every stage), run them `jobs` at a time, and wait for them all; a failed one names its log. `resume`: an
    experiment of that name already run on this commit is kept, not queued again (a queue that stopped, or a
    session that ended, part way: the finished runs stand, with their own logs). Returns how many were kept."""
    from tqdm import tqdm

    kept = []
    if resume:
        done = set(experiments())
        kept = [n for n in runs if n in done]
        print(f"--resume: {len(kept)} of {len(runs)} experiments already run on this commit, kept", flush=True)
        runs = {n: sets for n, sets in runs.items() if n not in done}
        if not runs:
            return len(kept)
    earlier = sorted(set(runs) & (set(experiments()) | set(queue_status())))
    if earlier:
        _dvc("exp", "remove", *earlier)
    for name, sets in runs.items():
        args = ["exp", "run", "--queue", "--name", name, *set_params(sets), *targets]
        print("$ " + " ".join(["dvc", *args]), flush=True)
        _dvc(*args)
    print(f"$ dvc queue start --jobs {jobs}   (follow one with `dvc queue logs NAME --follow`)", flush=True)
    _start_workers(jobs)
    start, stalled = time.monotonic(), 0
    with tqdm(total=len(runs), desc="experiments", unit="exp") as bar:
        while True:
            status, busy = _queue_report()
            # A worker can leave with runs still queued: one that shut down as an earlier queue emptied takes
            # the new start for its own, or a stale shutdown message in the broker reaches the new one. Two
            # looks in a row with runs queued, none running and no worker busy: start the workers again.
            states = {status.get(n) for n in runs}
            stalled = stalled + 1 if "Queued" in states and "Running" not in states and busy == 0 else 0
            if stalled >= 2:
                tqdm.write("the queue's workers stopped with experiments queued: starting them again")
                _start_workers(jobs)
                stalled = 0
            done = [n for n in runs if status.get(n) in ("Success", "Failed")]
            bar.update(len(done) - bar.n)
            failed = [n for n in done if status[n] == "Failed"]
            if failed:
                raise SystemExit(f"error: experiment {failed[0]} failed: see `dvc queue logs {failed[0]}`")
            if len(done) == len(runs):
                return len(kept)
            if not any(status.get(n) in ("Queued", "Running") for n in runs):
                raise SystemExit(f"error: the queue stopped with experiments missing; see `dvc queue status`")
            time.sleep(poll_wait(time.monotonic() - start))


def _start_workers(jobs: int) -> None:
    # Not through _dvc: the detached queue worker inherits the command's stdout, and a captured pipe stays open
    # until the worker exits, i.e. until the whole queue is empty, so the wait in run_queued would begin only then.
    subprocess.run(["dvc", "queue", "start", "--jobs", str(jobs)], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


def set_params(sets: dict[str, object]) -> list[str]:
    """`dvc exp run` arguments setting dotted keys (Hydra grammar: None is `null`)."""
    args = []
    for key, value in sets.items():
        args += ["--set-param", f"{key}={'null' if value is None else value}"]
    return args
