"""Where a DAG run's time went: one table from the Snakemake benchmark file of every job.

Every rule writes `logs/benchmarks/<rule>/<job>.tsv` (or `logs/benchmarks/<rule>.tsv` for a
one-job rule): wall seconds, peak RSS and CPU seconds of the job's command. This script reads
them after a run and prints, per rule and per detector: jobs, wall seconds (the time at least
one of its jobs was running, from the files' end times), job-seconds (the jobs' summed wall
time), CPU seconds and peak RSS; the run's wall time from first start to last end; and the
critical path, the chain of dependent jobs with the largest summed time (from the job DAG,
`snakemake --detailed-summary`), which bounds the run's time however many cores it gets.

    snakemake --cores 2 && python benchmarks/profile_dag.py                 # the default DAG
    python benchmarks/profile_dag.py path/to/project --configfile my.yaml   # another run (same config as it ran)
    python benchmarks/profile_dag.py --markdown --json profile.json
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

DETECTORS = ("patchcore", "padim", "knn", "routed_ae", "efficientad", "uninformed_students")


@dataclass
class Job:
    rule: str
    name: str  # the benchmark file's stem: the job's wildcards joined
    seconds: float
    cpu_seconds: float
    max_rss_mb: float
    end: float  # the file's modification time: when the job ended
    detector: str = "-"
    wildcards: dict[str, str] = field(default_factory=dict)

    @property
    def start(self) -> float:
        return self.end - self.seconds


def read_jobs(folder: Path) -> list[Job]:
    """Every benchmark file under `folder` (logs/benchmarks) as a Job."""
    jobs = []
    for path in sorted(folder.rglob("*.tsv")):
        rule = path.stem if path.parent == folder else path.relative_to(folder).parts[0]
        with path.open() as handle:
            rows = list(csv.DictReader(handle, delimiter="\t"))
        if not rows:
            continue
        row = rows[-1]  # a `repeat(...)` benchmark writes several rows; the last is the latest

        def number(key: str) -> float:
            try:
                return float(row.get(key) or 0.0)
            except ValueError:  # "NA" where psutil could not measure
                return 0.0

        name = path.stem if path.parent != folder else ""
        detector = next((d for d in sorted(DETECTORS, key=len, reverse=True) if re.match(rf"{d}(_|$)", name)), "-")
        jobs.append(Job(rule, name, number("s"), number("cpu_time"), number("max_rss"), path.stat().st_mtime, detector))
    return jobs


def busy_seconds(jobs: list[Job]) -> float:
    """The length of the union of the jobs' [start, end] intervals."""
    total, current_start, current_end = 0.0, None, None
    for job in sorted(jobs, key=lambda j: j.start):
        if current_end is None or job.start > current_end:
            if current_end is not None:
                total += current_end - current_start
            current_start, current_end = job.start, job.end
        else:
            current_end = max(current_end, job.end)
    return total + (current_end - current_start if current_end is not None else 0.0)


def summarise(jobs: list[Job], key) -> list[dict]:
    groups: dict[tuple, list[Job]] = defaultdict(list)
    for job in jobs:
        groups[key(job)].append(job)
    rows = []
    for group, members in groups.items():
        rows.append({"group": group, "jobs": len(members), "wall_s": busy_seconds(members),
                     "job_s": sum(j.seconds for j in members), "cpu_s": sum(j.cpu_seconds for j in members),
                     "max_rss_mb": max(j.max_rss_mb for j in members)})
    return sorted(rows, key=lambda r: -r["job_s"])


# ----------------------------------------------------------------------------- critical path


def job_graph(project: Path, snakemake_args: list[str]) -> tuple[dict[str, str], dict[str, set[str]]]:
    """The job DAG from `snakemake --detailed-summary` (every output with its rule, log and
    inputs): job (its log file) -> rule, and job -> the jobs it reads from."""
    snakemake = Path(sys.executable).parent / "snakemake"
    out = subprocess.run([str(snakemake if snakemake.exists() else "snakemake"), "--detailed-summary", *snakemake_args],
                         cwd=project, capture_output=True, text=True, check=True).stdout
    rows = list(csv.DictReader(out.splitlines(), delimiter="\t"))
    producer = {r["output_file"]: r["log-file(s)"] for r in rows if r["log-file(s)"] not in ("", "-")}
    rules = {r["log-file(s)"]: r["rule"] for r in rows if r["log-file(s)"] not in ("", "-")}
    parents: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        for path in (r["input-file(s)"] or "").split(","):
            if path in producer and r["log-file(s)"] in rules:
                parents[r["log-file(s)"]].add(producer[path])
    return rules, parents


def benchmark_of(log: str, rule: str, by_file: dict[str, Job]) -> Job | None:
    """A job's benchmark file: its log's path under logs/benchmarks/ (`.tsv`), else its stem in the rule's folder."""
    relative = Path(log).relative_to("logs") if log.startswith("logs/") else Path(log)
    for candidate in (relative.with_suffix(""), Path(rule) / relative.stem, Path(rule) / relative.stem.removeprefix(rule + "_")):
        if candidate.as_posix() in by_file:
            return by_file[candidate.as_posix()]
    return None


def critical_path(jobs: list[Job], rules: dict[str, str], parents: dict[str, set[str]]) -> tuple[list[Job], list[str]]:
    """The longest chain of dependent jobs by summed seconds, and the DAG jobs without a benchmark file."""
    by_file = {(j.rule if not j.name else f"{j.rule}/{j.name}"): j for j in jobs}
    timed = {log: benchmark_of(log, rule, by_file) for log, rule in rules.items()}
    missing = [log for log, job in timed.items() if job is None]
    best: dict[str, tuple[float, str | None]] = {}

    def longest(log: str) -> float:  # memoised; the DAG is acyclic
        if log not in best:
            own = timed[log].seconds if timed.get(log) else 0.0
            before, parent = max(((longest(p), p) for p in parents[log]), default=(0.0, None))
            best[log] = (own + before, parent)
        return best[log][0]

    sys.setrecursionlimit(max(10_000, 4 * len(rules)))
    node: str | None = max(rules, key=longest)
    chain = []
    while node is not None:
        if timed.get(node):
            chain.append(timed[node])
        node = best[node][1]
    return chain[::-1], missing


# ----------------------------------------------------------------------------- output


def table(rows: list[dict], label: str, markdown: bool) -> str:
    header = [label, "jobs", "wall s", "job-s", "CPU s", "max RSS MB"]
    lines = []
    cells = [[str(r["group"]), str(r["jobs"]), f"{r['wall_s']:.0f}", f"{r['job_s']:.0f}", f"{r['cpu_s']:.0f}", f"{r['max_rss_mb']:.0f}"] for r in rows]
    if markdown:
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|---|" + "---:|" * (len(header) - 1))
        lines += ["| " + " | ".join(c) + " |" for c in cells]
    else:
        widths = [max(len(x) for x in col) for col in zip(header, *cells)]
        for row in [header, *cells]:
            lines.append("  ".join(x.ljust(w) if i == 0 else x.rjust(w) for i, (x, w) in enumerate(zip(row, widths))))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("project", nargs="?", type=Path, default=Path("."), help="the project folder the run wrote (default: here)")
    parser.add_argument("--configfile", nargs="*", default=[], help="the --configfile(s) the run used (for the job DAG)")
    parser.add_argument("--markdown", action="store_true", help="Markdown tables")
    parser.add_argument("--json", type=Path, help="also write the numbers as JSON")
    parser.add_argument("--no-critical-path", action="store_true", help="skip the job DAG (no Snakemake call)")
    args = parser.parse_args(argv)

    folder = args.project / "logs" / "benchmarks"
    jobs = read_jobs(folder)
    if not jobs:
        raise SystemExit(f"{folder}: no benchmark files; run the DAG with snakemake first")
    per_rule = summarise(jobs, lambda j: j.rule)
    per_detector = summarise([j for j in jobs if j.detector != "-"], lambda j: (j.rule, j.detector))
    for row in per_detector:
        row["group"] = f"{row['group'][0]} / {row['group'][1]}"
    wall = max(j.end for j in jobs) - min(j.start for j in jobs)
    job_seconds = sum(j.seconds for j in jobs)
    print(f"{len(jobs)} jobs; wall {wall:.0f} s ({wall / 60:.1f} min) from the first start to the last end; "
          f"{job_seconds:.0f} job-seconds; {sum(j.cpu_seconds for j in jobs):.0f} CPU seconds\n")
    print(table(per_rule, "rule", args.markdown) + "\n")
    print(table(per_detector, "rule / detector", args.markdown) + "\n")
    result = {"jobs": len(jobs), "wall_s": wall, "job_s": job_seconds, "per_rule": per_rule, "per_detector": per_detector}
    if not args.no_critical_path:
        config = ["--configfile", *args.configfile] if args.configfile else []
        chain, missing = critical_path(jobs, *job_graph(args.project, config))
        total = sum(j.seconds for j in chain)
        print(f"critical path: {total:.0f} s over {len(chain)} jobs (no run can end sooner, whatever its cores)")
        for job in chain:
            print(f"  {job.seconds:7.0f} s  {job.rule} {job.name}".rstrip())
        if missing:
            print(f"({len(missing)} DAG jobs have no benchmark file, e.g. {missing[0]}: not run, or run before benchmarks existed)")
        result["critical_path"] = {"seconds": total, "jobs": [f"{j.rule} {j.name}".strip() for j in chain]}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
