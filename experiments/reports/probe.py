"""The probe section of the sweep report: the most probable words of each job's distributions."""

from __future__ import annotations

import pandas as pd

from experiments.reports.common import (
    Block,
    ExperimentReport,
    JobTable,
    Section,
    SectionInput,
    job_wheel,
    read_parquet,
    register,
    table_block,
)


def probe_section(part: SectionInput, top: int = 5) -> Section:
    entry = part.loaded
    section = Section("Probe", "probe")
    rows = []
    for job, _, frame in entry.tables:
        words = [w for w in job_wheel(job).words if w in frame.columns]
        means = frame[words].astype(float).mean().sort_values(ascending=False).head(top)
        rows.append({"job": job.name, "scenarios": len(frame),
                     f"top {top} words by mean probability": ", ".join(f"{w} {p:.3f}" for w, p in means.items())})
    if rows:
        section.blocks.append(table_block("Distributions per job", pd.DataFrame(rows)))
    section.blocks.extend(Block("text", text=note) for note in entry.notes)
    return section


REPORT = register("probe", ExperimentReport(
    order=40,
    tables=(JobTable("distributions", "distributions.parquet", read_parquet,
                     "distributions.parquet, one row per scenario with every word's probability"),),
    section=probe_section,
))
