"""Receiving a dump uploaded in the browser, for an import (catalog/imports.py).

DumpUploadHandler takes the place of Django's handlers for that one request:
a TemporaryFileUploadHandler whose file is the `input` of a new private
staging directory under the data directory (the import takes it over from
there), written as the request body arrives, never held in memory. It stops
the upload at IMPORT_MAX_BYTES: the body's declared length is checked before
the first byte is read, and the bytes as they come, so that a client that
says less than it sends is stopped too. A refused or interrupted upload
leaves no file behind.
"""

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.files.uploadedfile import TemporaryUploadedFile, UploadedFile
from django.core.files.uploadhandler import StopUpload, TemporaryFileUploadHandler
from django.http import HttpRequest

from catalog import imports
from catalog.engine.files import create_private_file

# The form's file field; any other file in the request is refused.
FIELD = "dump"
# What a multipart body holds besides the file: its other fields and boundaries.
FORM_OVERHEAD = 1 << 20


class StagedUpload(TemporaryUploadedFile):
    """The uploaded dump, written into its staging directory's `input`
    rather than into a temporary file of FILE_UPLOAD_TEMP_DIR."""

    def __init__(self, staging: Path, name: str | None, content_type: str | None, charset: str | None) -> None:
        self.staging = staging
        file = create_private_file(staging / imports.INPUT)
        UploadedFile.__init__(self, file, name, content_type, 0, charset)

    def temporary_file_path(self) -> str:
        return str(self.staging / imports.INPUT)


class DumpUploadHandler(TemporaryFileUploadHandler):
    def __init__(self, request: HttpRequest | None = None) -> None:
        super().__init__(request)
        self.limit = settings.IMPORT_MAX_BYTES
        self.refused = ""  # why the upload was stopped, for the form
        self.upload: StagedUpload | None = None

    def handle_raw_input(
        self, input_data: Any, META: Any, content_length: int, boundary: Any, encoding: Any = None
    ) -> None:
        if content_length > self.limit + FORM_OVERHEAD:
            self.refused = imports.too_large(content_length - FORM_OVERHEAD)

    def new_file(self, field_name: str, file_name: str, *args: Any, **kwargs: Any) -> None:
        if self.refused:
            raise StopUpload(connection_reset=True)  # said by the declared length: not a byte more is read
        if field_name != FIELD or self.upload is not None:
            self.refused = "Upload one dump file at a time."
            self.discard()
            raise StopUpload(connection_reset=True)
        super(TemporaryFileUploadHandler, self).new_file(field_name, file_name, *args, **kwargs)
        self.upload = StagedUpload(imports.new_staging(), self.file_name, self.content_type, self.charset)
        self.file = self.upload

    def receive_data_chunk(self, raw_data: bytes, start: int) -> None:
        assert self.upload is not None, "made by new_file"
        if start + len(raw_data) > self.limit:
            self.refused = imports.too_large(start + len(raw_data))
            self.discard()
            raise StopUpload(connection_reset=True)
        self.upload.write(raw_data)

    def file_complete(self, file_size: int) -> UploadedFile | None:
        if self.upload is None:
            return None
        self.upload.size = file_size
        self.upload.close()  # written: the import reads it by its path
        return self.upload

    def upload_interrupted(self) -> None:
        self.discard()

    def discard(self) -> None:
        """Removes the staged file, and its directory, unless nothing was staged."""
        if self.upload is not None:
            self.upload.close()
            imports.discard(self.upload.staging)
            self.upload = None
