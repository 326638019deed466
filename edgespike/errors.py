"""The one exception type for expected failures: the CLI prints its message on one line
and exits non-zero, without a traceback. Messages name the problem and the fix."""


class EdgespikeError(Exception):
    """Bad input or an unmet requirement, explained in one line."""
