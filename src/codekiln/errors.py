"""The one exception type for user mistakes: the CLI prints its message on one line and exits non-zero."""


class UserError(Exception):
    """A mistake in what the user asked for (bad path, bad config value, malformed input)."""
