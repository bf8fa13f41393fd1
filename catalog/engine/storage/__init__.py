"""Storage backends, one module each, behind one interface (base.py):

  base.py   what every backend offers (Storage, Writer), the checks they
            share (object keys, local roots), QuotaWriter, error wording
  local.py  LocalStorage: a directory on this machine
  s3.py     S3Storage: S3 or any S3-compatible endpoint (MinIO, R2, ...)

Writers make a copy durable only in commit(); abort() removes whatever was
written. Each backend's module says what durable means for it.
"""
