"""``python -m include.gir_ops.doctor``: the doctor's checks from a shell with the Airflow environment.

Run it where a worker runs (same mounts, same network, same configuration: AIRFLOW_HOME or AIRFLOW__*,
GIR_TOPOLOGY). It prints the table (check, result, fix) and exits 1 when a check failed. The triggerer's
view (paths readable from the triggerer) needs the DAG ``gir_doctor``: `make doctor` triggers it on the
`make run` stack, or trigger it from the UI / REST API in a deployment.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from include.gir_ops.doctor.checks import worker_rows
from include.gir_ops.doctor.report import format_table, summary, to_dict
from include.gir_ops.doctor.spec import DAG_ID, Row, Status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m include.gir_ops.doctor", description="Does this gir-ops deployment actually work?"
    )
    parser.add_argument("--topology", help="topology file (default: $GIR_TOPOLOGY)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    rows = worker_rows(args.topology, where="worker (this shell)")
    rows.append(
        Row(
            "paths from the triggerer",
            Status.CANNOT_CHECK,
            "this command does not run in the triggerer",
            f"trigger DAG {DAG_ID} (UI or REST API; `make doctor` on the make-run stack) for the "
            "triggerer's view",
        )
    )
    if args.json:
        print(json.dumps(to_dict(rows), indent=2))
    else:
        print(format_table(rows))
        print(summary(rows))
    return 0 if to_dict(rows)["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
