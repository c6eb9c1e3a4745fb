"""`ltrain search --jobs N`: N worker processes on one study, and this process watching them.

Each worker is `ltrain search` again with a hidden `--worker` option: the same settings, its own
sampler seed, its share of the CPU threads (or its own GPU when there are several), its output in
`<study>.worker-K.log` next to the study. The workers coordinate through the storage only, as
processes on other machines would; this process prints each trial's start and end from there.
A worker whose search process dies (even by kill -9) ends too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import click

from ltrain.app.search import Settings, live_trials, open_study


def run_workers(settings: Settings, jobs: int, deadline: float | None) -> int:
    """`--jobs N`: N worker processes, each with its share of the CPU threads (or its own GPU
    when there are several) and its output in `<study>.worker-K.log`; this process prints each
    trial's progress from the storage. Returns the workers' worst exit code."""
    import torch

    threads = max(1, (os.cpu_count() or 1) // jobs)
    gpus = torch.cuda.device_count()
    settings.outputs.mkdir(parents=True, exist_ok=True)
    processes = []
    for worker in range(jobs):
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        if gpus > 1:
            env["CUDA_VISIBLE_DEVICES"] = str(worker % gpus)
        log = settings.outputs / f"{settings.study}.worker-{worker}.log"
        command = [
            sys.executable,
            "-m",
            "ltrain",
            "search",
            *worker_words(settings, worker, deadline),
        ]
        with open(log, "ab") as handle:
            processes.append(
                subprocess.Popen(command, env=env, stdout=handle, stderr=subprocess.STDOUT)
            )
    click.echo(
        f"{jobs} workers, {threads} CPU threads each; their output: {settings.outputs}/{settings.study}.worker-*.log",
        err=True,
    )
    watcher = Watcher(settings)
    try:
        while any(p.poll() is None for p in processes):
            watcher.show_changes()
            time.sleep(0.5)
    except KeyboardInterrupt:
        for process in processes:
            process.wait()  # Ctrl-C reached them too: each re-queues its trial and exits
        raise
    watcher.show_changes()
    return max(p.returncode for p in processes)


def worker_words(settings: Settings, worker: int, deadline: float | None) -> list[str]:
    """The `ltrain search` arguments that make a worker process of this search."""
    words = [*settings.fit_words]
    for space in settings.spaces:
        words += ["--space", f"{space.key}={space.spec}"]
    words += ["--metric", settings.metric, "--direction", settings.direction]
    words += ["--trials", str(settings.trials), "--sampler", settings.sampler]
    words += ["--pruner", settings.pruner, "--storage", settings.storage, "--study", settings.study]
    words += [
        "--worker",
        json.dumps({"index": worker, "parent": os.getpid(), "deadline": deadline}),
    ]
    return words


def watch_parent(parent: int) -> None:
    """A worker ends with the search that started it, even one killed outright (kill -9)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


class Watcher:
    """Prints each trial's start and end as other processes write them into the storage."""

    def __init__(self, settings: Settings) -> None:
        self.study = open_study(settings, create=False)
        self.settings = settings
        self.seen: dict[int, str] = {t.number: t.state.name for t in live_trials(self.study)}

    def show_changes(self) -> None:
        from ltrain.console import info

        for trial in live_trials(self.study):
            state = trial.state.name
            if self.seen.get(trial.number) == state:
                continue
            self.seen[trial.number] = state
            params = " ".join(f"{k}={v}" for k, v in trial.params.items())
            if state == "RUNNING":
                info(f"Trial {trial.number} started: {params}")
            elif state == "COMPLETE":
                info(f"Trial {trial.number}: {self.settings.metric}={trial.value:.6g}")
            elif state == "PRUNED":
                info(f"Trial {trial.number} pruned after validation {trial.last_step}")
            elif state == "FAIL":
                info(f"Trial {trial.number} failed: {trial.user_attrs.get('error', '')}")
