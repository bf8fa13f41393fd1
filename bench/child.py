"""One Strongroom job in its own process, as a worker runs it, so bench.run can
sample this process tree's memory. Prints one JSON line: the wall and CPU time
of the service call itself (Python start-up and django.setup() excluded, as a
long-running worker pays them once) and what it produced.

    python -m bench.child backup <plan_id>
    python -m bench.child restore <backup_id> <new database name>
    python -m bench.child verify <backup_id>
"""

import json
import os
import resource
import sys
import time

import django


def cpu_seconds():
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main(argv):
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
    django.setup()
    from catalog import backup_runs, verification
    from catalog.models import Backup, BackupPlan, Copy
    from restore import services as restores
    from restore.models import RestoreJob

    action = argv[0]
    wall, cpu = time.perf_counter(), cpu_seconds()
    if action == "backup":
        plan = BackupPlan.objects.get(pk=int(argv[1]))
        backup = backup_runs.create_backup("bench", plan, label="bench")
        backup_runs.run_backup(backup.pk)
        backup.refresh_from_db()
        ok = backup.status == Backup.SUCCEEDED
        extra = {
            "backup_id": backup.pk,
            "stored_bytes": backup.stored_bytes,
            "raw_bytes": backup.raw_bytes,
            "copies": list(backup.copies.filter(status=Copy.DURABLE).values_list("destination__kind", flat=True)),
            "error": backup.error,
        }
    elif action == "restore":
        backup = Backup.objects.get(pk=int(argv[1]))
        job = restores.request_restore("bench", backup, target=RestoreJob.NEW, database=argv[2], enqueue=False)
        job = restores.run_restore(job.pk) or RestoreJob.objects.get(pk=job.pk)
        job.refresh_from_db()
        ok = job.status == RestoreJob.SUCCEEDED
        extra = {"status": job.status, "steps": {step["name"]: step.get("seconds") for step in job.steps}}
    elif action == "verify":
        backup = Backup.objects.get(pk=int(argv[1]))
        job = verification.create_verification("bench", backup, verification.CHECKSUM, enqueue_it=False)
        job = verification.run_verification(job.pk)
        ok = job.status == job.PASSED
        extra = {"status": job.status, "summary": job.summary}
    else:
        raise SystemExit(f"unknown action {action}")
    result = {"ok": ok, "wall": time.perf_counter() - wall, "cpu": cpu_seconds() - cpu, **extra}
    print(json.dumps(result, default=str))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
