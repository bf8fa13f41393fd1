"""django-q2 entry points of the restore app."""

from restore import services


def run_restore(job_id: int) -> str:
    job = services.run_restore(job_id)
    return job.status if job else "skipped"
