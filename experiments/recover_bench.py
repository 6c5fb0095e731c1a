"""Expand-and-Cluster over random teachers (weightsim/recover/bench.py, docs/recover.md "Benchmark").

    python experiments/recover_bench.py OUT_DIR [--configs 3] [--seeds 3] [--jobs 2] [--threads T] [--limit N]
                                                [--optimizer lbfgs|adam] [--summary]

Draws 8 classes (1 or 2 hidden layers x tanh/softplus/relu/gelu) x configs x seeds teachers, runs
both presets on each with the default ECConfig (``--jobs`` teachers at a time, ``--threads`` torch
threads each: default the CPU count over the jobs; ``--jobs 1`` times a teacher on the whole machine)
and appends one row per (teacher, preset) to OUT_DIR/results.csv as each teacher ends: a rerun skips
the teachers already there (a stopped run resumes). ``--limit N`` runs only the first N teachers not yet
done, cycling over the classes so a partial run covers all of them. Then prints and writes the per-class
table (OUT_DIR/summary.md) and figure (OUT_DIR/success.png). ``--summary`` only summarizes what is there.
"""

from __future__ import annotations

import argparse
import csv
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from joblib import Parallel, delayed  # noqa: E402

from weightsim.recover.bench import TeacherSpec, draw_specs, run_teacher, summarize  # noqa: E402
from weightsim.recover.options import ECConfig  # noqa: E402
from weightsim.report.tables import markdown_table  # noqa: E402

SUMMARY = ["class", "preset", "optimizer", "teachers", "successes", "success_rate", "recovered_frac", "overhead",
           "median_seconds"]


def one(spec: TeacherSpec, optimizer: str, threads: int) -> list[dict]:
    torch.set_num_threads(threads)
    return run_teacher(spec, ECConfig(optimizer=optimizer))


def interleaved(specs: list[TeacherSpec]) -> list[TeacherSpec]:
    """The specs reordered round-robin over their classes (a partial run covers every class)."""
    by = {}
    for s in specs:
        by.setdefault(s.cls, []).append(s)
    queues = list(by.values())
    return [q[i] for i in range(max(map(len, queues))) for q in queues if i < len(q)]


def plot(table: list[dict], path: Path) -> None:
    classes = sorted({r["class"] for r in table})
    series = sorted({(r["preset"], r["optimizer"]) for r in table})
    fig, ax = plt.subplots(figsize=(1.1 * len(classes) + 2, 3.5))
    w = 0.8 / len(series)
    for j, (preset, opt) in enumerate(series):
        rate = {r["class"]: r for r in table if (r["preset"], r["optimizer"]) == (preset, opt)}
        xs = [i + j * w for i, c in enumerate(classes) if c in rate]
        ax.bar(xs, [100 * rate[c]["success_rate"] for c in classes if c in rate], width=w, label=f"{preset} ({opt})")
        for x, c in zip(xs, [c for c in classes if c in rate]):
            ax.text(x, 2, f"{rate[c]['successes']}/{rate[c]['teachers']}", ha="center", fontsize=6, rotation=90)
    ax.set_xticks([i + 0.4 - w / 2 for i in range(len(classes))], classes, fontsize=8)
    ax.axhline(95, color="k", ls=":", lw=0.8)
    ax.set_ylabel("teachers recovered (%)")
    ax.set_ylim(0, 105)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("--configs", type=int, default=3)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--threads", type=int, default=None, help="torch threads per job (default: CPUs // jobs)")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--optimizer", default="lbfgs", choices=["lbfgs", "adam"])
    p.add_argument("--summary", action="store_true")
    a = p.parse_args()
    if a.jobs < 1 or (a.threads is not None and a.threads < 1):
        raise SystemExit(f"error: --jobs {a.jobs} --threads {a.threads}: need >= 1 each")
    threads = a.threads or max(1, (os.cpu_count() or 1) // a.jobs)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    results = out / "results.csv"
    rows = list(csv.DictReader(results.open())) if results.exists() else []
    done = {(r["teacher"], r["optimizer"]) for r in rows}
    todo = [s for s in interleaved(draw_specs(a.configs, a.seeds)) if (s.name, a.optimizer) not in done][:a.limit]
    if not a.summary and todo:
        print(f"{len(todo)} teachers to run ({len(done)} done), {a.jobs} at a time, {threads} threads each -> {results}",
              flush=True)
        run = Parallel(n_jobs=a.jobs, return_as="generator_unordered")
        for new in run(delayed(one)(s, a.optimizer, threads) for s in todo):
            head = not results.exists()
            with results.open("a", newline="") as f:
                w = csv.DictWriter(f, fieldnames=list(new[0]))
                if head:
                    w.writeheader()
                w.writerows(new)
            rows += new
            print(" | ".join(f"{r['teacher']} {r['preset']}: {r['recovered_frac']:.2f} "
                             f"{r['overhead']:+.0%} {'ok' if r['success'] else 'FAIL'}" for r in new)
                  + f" ({new[0]['seconds']:.0f}s)", flush=True)
    if not rows:
        raise SystemExit(f"error: no results in {results}: run without --summary first")
    table = summarize(rows)
    text = markdown_table(table, SUMMARY)
    (out / "summary.md").write_text(text + "\n")
    plot(table, out / "success.png")
    print(text + f"\n\nfigure: {out / 'success.png'}")


if __name__ == "__main__":
    main()
