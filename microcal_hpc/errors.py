"""Error types that the command line turns into one-line messages and a non-zero exit."""


class MicrocalError(Exception):
    """Base class: an expected failure whose message is shown to the user as one line."""

    exit_code = 2


class InputError(MicrocalError):
    """Bad input data: the message names the file and the problem."""


class ConfigError(MicrocalError):
    """Bad configuration: unknown key, wrong type, or an invalid value."""


class Terminated(MicrocalError):
    """The job was stopped by SIGTERM (e.g. scancel) while writing; its temporary output was removed."""

    exit_code = 143
