"""gcs test server: started once per session by the harness (stub until built)."""
