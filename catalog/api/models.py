"""API tokens: shown once at creation, stored only as a SHA-256 hash."""

import hashlib
from datetime import datetime

from django.conf import settings
from django.db import models
from django.utils import timezone


class ApiToken(models.Model):
    READ, BACKUP, RESTORE = "read", "backup", "restore"
    SCOPE_CHOICES = [
        (READ, "read: status, backups, hosts, metrics"),
        (BACKUP, "backup: start backups and verifications"),
        (RESTORE, "restore: start restores of backups and point-in-time restores"),
    ]

    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, help_text="the token's first characters, to recognise it")
    token_hash = models.CharField(max_length=64, unique=True)
    scopes = models.JSONField(default=list)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API token"  # not "Api token" in the admin

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @staticmethod
    def hash(raw_token: str) -> str:
        return hashlib.sha256(raw_token.encode()).hexdigest()

    def is_expired(self, now: datetime | None = None) -> bool:
        return self.expires_at is not None and self.expires_at <= (now or timezone.now())

    def has_scope(self, scope: str) -> bool:
        """A token acts for the person it belongs to: once they are no longer
        an administrator, it may only read, whatever it was made with."""
        return scope in self.scopes and (scope == self.READ or self.owner_may_change_things())

    def owner_may_change_things(self) -> bool:
        # Tokens made before tokens had owners keep their scopes (the token page flags them).
        return self.created_by is None or self.created_by.has_perm("catalog.operate")
