"""Engine errors. Every message is one line in words, with no secret in it."""


class EngineError(Exception):
    pass


class SourceError(EngineError):
    """The database could not be read."""


class StorageError(EngineError):
    """A destination could not be written or read."""


class CorruptionError(EngineError):
    """Stored bytes are not what was written (checksum, tag or key mismatch).

    `offset`, when known, is where in the stored object the damaged part
    starts, and `length` how long that part is (an encrypted segment: the
    first bad byte is somewhere inside it)."""

    def __init__(self, message: str, offset: int | None = None, length: int | None = None) -> None:
        super().__init__(message)
        self.offset = offset
        self.length = length


class KeyMissing(CorruptionError):
    """The master key an object needs is not available."""


class Cancelled(EngineError):
    """Someone asked the job to stop."""
