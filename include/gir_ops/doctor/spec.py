"""What the doctor DAG file needs at parse time, and the words of its report.

Imported on every parse of ``dags/gir_doctor.py``: nothing heavy (the checks import RWS, the REST API
client and object storage when they run).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

DAG_ID = "gir_doctor"
WORKER_CHECKS = "worker_checks"
TRIGGERER_CHECKS = "triggerer_checks"
REPORT = "report"
REPORT_XCOM_KEY = "doctor_report"

# How long the triggerer may take to pick up and run the readability check before the doctor says so.
TRIGGERER_TIMEOUT_SECONDS = 120
# How long one path may take to answer (a hung NFS/SMB mount) before it counts as unreadable.
PATH_TIMEOUT_SECONDS = 20.0


class Status(StrEnum):
    """The result of one check. Only FAIL makes the doctor red."""

    OK = "OK"
    FAIL = "FAIL"
    CANNOT_CHECK = "CANNOT CHECK"
    NOT_CONFIGURED = "NOT CONFIGURED"


@dataclass(frozen=True)
class Row:
    """One line of the report: which check, what it found, and what to do when it is not OK."""

    check: str
    status: Status
    result: str
    fix: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "status": str(self.status)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Row:
        return cls(str(data["check"]), Status(data["status"]), str(data["result"]), str(data.get("fix", "")))
