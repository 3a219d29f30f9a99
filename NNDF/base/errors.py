"""The one error type a user sees.

Anything wrong with what the user asked for (flags, files, variants, missing
hardware) is raised as `UsageError` with a message that names the problem and
the fix. `run.py` prints it on one line and exits with status 2; everything
else is a bug and keeps its traceback.
"""


class UsageError(Exception):
    """Bad input or an unusable environment, explained in one line."""

    exit_code = 2

    def __init__(self, problem: str, fix: str | None = None):
        message = problem if fix is None else f"{problem}; {fix}"
        super().__init__(message)
        self.problem = problem
        self.fix = fix
