"""Errors every app raises in the same words. Free of Django, so that the
modules that talk to a database server (restore/target.py) can raise them too."""


class Refused(Exception):
    """An operation that cannot be done, or a job that must not go on; str()
    is a message for the user, in words, with no secret in it."""
