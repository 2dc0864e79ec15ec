"""The fix workflow's errors. Their class names are the error names Step Functions sees when a
task function raises them (the Lambda error document's `errorType`), so
statemachines/fix_pr.asl.json retries `TransientError` and nothing else of ours: renaming a class
here changes the workflow."""

from __future__ import annotations


class FixError(Exception):
    """A permanent failure of a fix step: retrying the same input cannot help."""


class TransientError(FixError):
    """A failure worth retrying with backoff: a repository host's 5xx or 429, a rate limit, a
    timeout or a dropped connection, a throttled AWS call."""


class RepoError(FixError):
    """The repository host refused the request (bad token, no access, missing file or branch)."""


class PatchRejected(FixError):
    """The drafted diff touches files outside the fixable set, does not apply, or does not
    parse: nothing may be opened from it."""


class FixNotFound(FixError):
    """No fix workflow has that id."""


class FixConflict(FixError):
    """The fix is not waiting for a decision (already approved, rejected, finished, expired)."""

    def __init__(self, message: str, status: str | None = None) -> None:
        super().__init__(message)
        self.status = status
