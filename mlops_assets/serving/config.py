"""Configuration of the scoring service: API keys (hashed), scopes, canary shares, limits, and the
accounts of the review pages (scrypt-hashed passwords, roles).

From a YAML file (`MLOPS_SERVING_CONFIG`, default `<MLOPS_HOME>/serving.yaml`) and/or the environment
variable `MLOPS_API_KEYS` (`name:sha256:scope+scope,name:sha256:scope`). Only the sha256 of each key is
ever stored. SHA-256 rather than a slow password hash (argon2, bcrypt): API keys are random tokens with
at least 128 bits of entropy (`new_api_key`), so guessing one from its hash is infeasible anyway, and a
deliberately slow hash would add tens of milliseconds to every request. Keys are compared in constant
time (hmac.compare_digest).

    api_keys:
      - {name: crm, sha256: 5e88...d8, scopes: [lookup, score]}
    accounts:    # python -m mlops_assets.serving.config account NAME reviewer+auditor
      - {name: ada, password_scrypt: 'scrypt$16384$8$1$...$...', roles: [reviewer, auditor]}
    use_cases:
      caravan: {canary_share: 0.1}
    max_body_bytes: 1000000
    max_records: 1000
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

Scope = Literal["lookup", "score"]
SCOPES: tuple[str, ...] = ("lookup", "score")


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_api_key() -> str:
    """A fresh random key (256 bits), to hand to a caller; store only hash_api_key(key)."""
    return "mlk_" + secrets.token_urlsafe(32)


class ApiKey(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="Who calls with this key (recorded with every request).")
    sha256: str = Field(description="sha256 hex digest of the key; the key itself is never stored.")
    scopes: tuple[Scope, ...]

    @field_validator("sha256")
    @classmethod
    def _is_a_sha256(cls, value: str) -> str:
        if not re.fullmatch(r"[0-9a-f]{64}", value):
            raise ValueError("must be the 64-character lower-case hex sha256 of the key")
        return value


# Passwords of the review pages' accounts: scrypt from the standard library (hashlib.scrypt, OpenSSL's
# implementation) rather than a new dependency (argon2-cffi, bcrypt): it is a memory-hard password hash
# recommended for this purpose (RFC 7914; OWASP lists it), salted per password; n=2**14, r=8, p=1
# costs about 16 MiB and ~50 ms per check here, paid only at login. Unlike API keys, passwords are
# chosen by people and guessable, so a fast hash (sha256) would not do.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
ROLES: tuple[str, ...] = ("reviewer", "auditor")
Role = Literal["reviewer", "auditor"]


def hash_password(password: str, salt: bytes | None = None) -> str:
    """`scrypt$n$r$p$salt$hash` (hex); store this, never the password."""
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    _, n, r, p, salt, expected = stored.split("$")
    digest = hashlib.scrypt(
        password.encode("utf-8"), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p), dklen=len(expected) // 2
    )
    return hmac.compare_digest(digest.hex(), expected)


# Checked against when the account does not exist, so a login takes as long for an unknown name.
_DUMMY_PASSWORD_HASH = hash_password("no such account", salt=b"\0" * 16)


class Account(BaseModel):
    """A person using the review pages: name (recorded as reviewer), scrypt hash, roles."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, description="Login name, recorded with every decision.")
    password_scrypt: str = Field(description="hash_password(password); the password itself is never stored.")
    roles: tuple[Role, ...] = Field(description="reviewer: approve/reject models; auditor: customer audit.")

    @field_validator("password_scrypt")
    @classmethod
    def _is_a_scrypt_hash(cls, value: str) -> str:
        if not re.fullmatch(r"scrypt\$\d+\$\d+\$\d+\$[0-9a-f]{32,}\$[0-9a-f]{32,}", value):
            raise ValueError("must be a hash from mlops_assets.serving.config.hash_password (scrypt$n$r$p$salt$hash)")
        return value


class UseCaseServing(BaseModel):
    model_config = ConfigDict(extra="forbid")

    canary_share: float = Field(
        0.0, ge=0, le=1, description="Share of customers (by id hash, sticky) answered by the challenger."
    )


class ServingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    api_keys: list[ApiKey] = []
    accounts: list[Account] = Field([], description="People who log in to the review pages at /.")
    use_cases: dict[str, UseCaseServing] = {}
    max_body_bytes: int = Field(1_000_000, ge=1_000, description="Larger request bodies get 413.")
    max_records: int = Field(1_000, ge=1, description="More records in one score request get 413.")
    watch_interval_seconds: float = Field(0.25, gt=0, description="How often published files are checked.")

    def caller_for(self, key: str) -> ApiKey | None:
        digest = hash_api_key(key)
        found = None
        for candidate in self.api_keys:
            if hmac.compare_digest(candidate.sha256, digest):
                found = candidate
        return found

    def account_for(self, name: str, password: str) -> Account | None:
        """The account if the password matches (same work whether or not the name exists)."""
        found = next((a for a in self.accounts if a.name == name), None)
        matches = verify_password(password, found.password_scrypt if found else _DUMMY_PASSWORD_HASH)
        return found if found is not None and matches else None

    def account(self, name: str) -> Account | None:
        return next((a for a in self.accounts if a.name == name), None)

    def canary_share(self, use_case: str) -> float:
        return self.use_cases.get(use_case, UseCaseServing()).canary_share

    @classmethod
    def load(cls, path: Path | None = None, environment: dict[str, str] | None = None) -> ServingConfig:
        """The file (if it exists) plus keys from MLOPS_API_KEYS; a malformed entry raises ValueError."""
        environment = os.environ if environment is None else environment
        data: dict = {}
        if path is not None and Path(path).exists():
            with open(path) as handle:
                data = yaml.safe_load(handle) or {}
        keys = list(data.get("api_keys") or [])
        for index, entry in enumerate(filter(None, environment.get("MLOPS_API_KEYS", "").split(","))):
            parts = entry.strip().split(":")
            if len(parts) != 3:
                raise ValueError(f"MLOPS_API_KEYS entry {index + 1}: expected name:sha256:scope+scope, got {entry!r}")
            keys.append({"name": parts[0], "sha256": parts[1], "scopes": parts[2].split("+")})
        try:
            return cls.model_validate({**data, "api_keys": keys})
        except ValueError as error:
            raise ValueError(f"invalid serving configuration ({path or 'environment'}): {error}") from error


if __name__ == "__main__":
    import getpass
    import sys

    if sys.argv[1:2] == ["account"]:
        # python -m mlops_assets.serving.config account NAME reviewer+auditor  (asks for the password)
        name, roles = sys.argv[2], sys.argv[3].split("+") if len(sys.argv) > 3 else list(ROLES)
        password = getpass.getpass(f"Password for {name}: ")
        if len(password) < 12:
            sys.exit("A password needs at least 12 characters.")
        print("Add to serving.yaml under accounts:")
        print(f"  - {{name: {name}, password_scrypt: '{hash_password(password)}', roles: [{', '.join(roles)}]}}")
        sys.exit(0)
    name = sys.argv[1] if len(sys.argv) > 1 else "my-application"
    scopes = sys.argv[2].split("+") if len(sys.argv) > 2 else list(SCOPES)
    key = new_api_key()
    print(f"API key for {name} (give it to the caller, it is not stored anywhere): {key}")
    print("Add to serving.yaml under api_keys:")
    print(f"  - {{name: {name}, sha256: {hash_api_key(key)}, scopes: [{', '.join(scopes)}]}}")
    print(f"or to MLOPS_API_KEYS: {name}:{hash_api_key(key)}:{'+'.join(scopes)}")
