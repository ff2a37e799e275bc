"""The one exception type users see.

Every expected failure (bad file, bad setting, busy port...) is raised as `EdgeAIError` with a
single line that names the problem and what to do; the CLI prints it and exits non-zero instead of
showing a traceback.
"""


class EdgeAIError(Exception):
    """A user-facing error: one line saying what is wrong and how to fix it."""
