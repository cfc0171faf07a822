"""The one exception type that the CLI turns into a single clear line on stderr."""


class UserError(Exception):
    """A mistake in the user's input (path, data, config key): reported as one line, exit status 2."""
