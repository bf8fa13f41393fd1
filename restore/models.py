# Restore jobs arrive with the guided restore (issue 5).
