"""Exceptions meant for people: the CLI prints them as one paragraph and exits 2."""


class UserError(Exception):
    """A mistake the user can fix (bad input, bad config, impossible plan)."""


class ConfigError(UserError):
    """A config file or override that does not describe a valid run."""
