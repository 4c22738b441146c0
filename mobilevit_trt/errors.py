"""One exception type for user errors: the CLI prints its message on one line and exits 1."""


class UserError(Exception):
    """A problem with the user's input (path, flag combination, checkpoint, environment), not a bug."""
