"""Harness shared by the tutorial programs: each section's outcome goes to OUT_DIR/report.json."""

import json
import os
import sys


def run_sections(out_dir, sections):
    """Runs each `(name, fn(report_dict))`, records its error if any, writes the report, and
    exits 1 if a section failed (after running the others)."""
    report = {}
    for name, section in sections:
        report[name] = {}
        try:
            section(report[name])
        except Exception as e:  # noqa: BLE001 - report each section, then fail the program
            lines = [line.strip() for line in str(e).splitlines() if line.strip()]
            report[name]["error"] = f"{type(e).__name__}: {lines[-1] if lines else ''}"[:1000]
    with open(os.path.join(out_dir, "report.json"), "w") as f:
        json.dump(report, f, indent=1)
    if any("error" in r for r in report.values()):
        sys.exit(1)
