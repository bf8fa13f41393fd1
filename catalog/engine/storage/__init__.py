"""Storage backends, one module each, behind one interface (base.py):

  base.py   what every backend offers (Storage, Writer), the checks they
            share (object keys, local roots), QuotaWriter, error wording
  local.py  LocalStorage: a directory on this machine
  s3.py     S3Storage: S3 or any S3-compatible endpoint (MinIO, R2, ...)
  azure.py  AzureStorage: Azure Blob Storage (staged blocks, committed at the end)
  gcs.py    GcsStorage: Google Cloud Storage (a resumable upload session)
  sftp.py   SftpStorage: a directory on an SFTP server (a temporary file,
            renamed into place; the server's host key pinned)

Writers make a copy durable only in commit(); abort() removes whatever was
written. Each backend's module says what durable means for it.
"""
