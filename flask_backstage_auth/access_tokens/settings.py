"""``accessTokens.*``: the lifetimes, intervals and limits of the access-tokens plugin."""

from __future__ import annotations

from dataclasses import dataclass

from flask_backstage_auth.access_tokens.format import TokenKind
from flask_backstage_auth.config.reader import ConfigReader
from flask_backstage_auth.errors import ConfigError

DAY = 86400


def _positive(config: ConfigReader, key: str, default: float) -> float:
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ConfigError(f"{config.path(key)} must be a positive number")
    return float(value)


@dataclass(frozen=True)
class AccessTokenSettings:
    """``accessTokens.*`` with their defaults (all durations in seconds)."""

    max_lifetime: float = 365 * DAY
    default_lifetime: float = 90 * DAY
    revocation_check: float = 5
    #: Push changes to other instances (PostgreSQL ``LISTEN/NOTIFY``).
    revocation_push: bool = True
    last_used_interval: float = 300
    audit_retention: float = 365 * DAY
    max_rotation_grace: float = DAY
    personal_enabled: bool = False
    personal_default_lifetime: float = 30 * DAY
    personal_max_lifetime: float = 365 * DAY
    personal_max_per_user: int = 20

    @classmethod
    def from_config(cls, config: ConfigReader) -> AccessTokenSettings:
        service = config.get_config("accessTokens.service")
        personal = config.get_config("accessTokens.personal")
        settings = cls(
            max_lifetime=_positive(service, "maxTokenLifetimeDays", 365) * DAY,
            default_lifetime=_positive(service, "defaultTokenLifetimeDays", 90) * DAY,
            revocation_check=_positive(service, "revocationCheckSeconds", 5),
            revocation_push=service.get_bool("revocationPush", True),
            last_used_interval=_positive(service, "lastUsedIntervalSeconds", 300),
            audit_retention=_positive(service, "auditRetentionDays", 365) * DAY,
            max_rotation_grace=_positive(service, "maxRotationGraceSeconds", DAY),
            personal_enabled=personal.get_bool("enabled", False),
            personal_default_lifetime=_positive(personal, "defaultExpiryDays", 30) * DAY,
            personal_max_lifetime=_positive(personal, "maxExpiryDays", 365) * DAY,
            personal_max_per_user=int(_positive(personal, "maxTokensPerUser", 20)),
        )
        if settings.default_lifetime > settings.max_lifetime:
            raise ConfigError(
                "accessTokens.service.defaultTokenLifetimeDays must not exceed maxTokenLifetimeDays"
            )
        if settings.personal_default_lifetime > settings.personal_max_lifetime:
            raise ConfigError(
                "accessTokens.personal.defaultExpiryDays must not exceed maxExpiryDays"
            )
        return settings

    def lifetime(self, kind: TokenKind) -> tuple[float, float]:
        """The default and the longest lifetime of a new (or rotated) token of ``kind``."""
        if kind == "personal":
            return self.personal_default_lifetime, self.personal_max_lifetime
        return self.default_lifetime, self.max_lifetime
