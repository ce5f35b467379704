"""What the subcommands share: the one error type they raise for bad input."""


class CliError(Exception):
    """Bad input for a subcommand: printed as one line, exit status 2."""
