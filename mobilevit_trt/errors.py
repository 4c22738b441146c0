"""One exception type for user errors: the CLI prints its message on one line and exits 1."""


class UserError(Exception):
    """A problem with the user's input (path, flag combination, checkpoint, environment), not a bug."""


class Unavailable(UserError):
    """This machine lacks what a step needs (TensorRT, a CUDA GPU, the plugin library, a checkpoint): the command
    line reports it as an error; the pipeline's stage runner records the stage as skipped with this reason.
    Raised where the fact is known (``trt_compat``, ``cuda``, ``build``), not re-decided by callers."""
