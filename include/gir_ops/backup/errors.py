"""What can stop shipping, each error naming the folder or file and what to do.

``SourceChanged`` and ``WriteFailed`` say ``retryable = True``: ``shared.fail_without_retry`` lets
Airflow retry them (the retry resumes); every other ``BackupError`` ends the task at once.
"""

from __future__ import annotations

from dataclasses import dataclass

_MAX_NAMED_PROBLEMS = 20


class BackupError(Exception):
    """Shipping cannot go on; the message names the folder or file and what to do."""


class BackupNotFound(BackupError):
    """No backup folder where the topology says SpeechMiner writes them."""


class SourceUnreachable(BackupNotFound):
    """The source folder itself cannot be reached: its share is not mounted here, or the path is wrong.

    During a failover away from the source DC this is what the primary's loss looks like from a worker.
    """


class BackupRefused(BackupError):
    """The backup contains something that must not be shipped: a symlink, a special file, a bad name."""


class SourceChanged(BackupError):
    """A source file changed while it was copied: SpeechMiner is still writing. Retrying is safe."""

    retryable = True


class WriteFailed(BackupError, OSError):
    """An fsync, close or rename at the destination failed: nothing was published. Retrying is safe.

    An ``OSError`` too, so code that handles storage errors still sees it as one.
    """

    retryable = True


@dataclass(frozen=True)
class Problem:
    """One file that failed verification and why."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path} ({self.reason})"


def name_problems(problems: list[Problem]) -> str:
    """The first problems for one message line, and how many more there are."""
    named = "; ".join(str(problem) for problem in problems[:_MAX_NAMED_PROBLEMS])
    more = len(problems) - _MAX_NAMED_PROBLEMS
    return named + (f"; and {more} more" if more > 0 else "")


class VerificationFailed(BackupError):
    """The destination does not hold what was read from the source; ``problems`` names every file."""

    def __init__(self, folder: str, problems: list[Problem]) -> None:
        self.folder = folder
        self.problems = problems
        super().__init__(
            f"verification of {folder} failed for {len(problems)} file(s): {name_problems(problems)}"
        )


class PublishConflict(BackupError):
    """The final name is taken by something this DAG cannot safely replace."""


class BackupStale(BackupError):
    """The newest verified backup at the destination is too old (or there is none)."""
