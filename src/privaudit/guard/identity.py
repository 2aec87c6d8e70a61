"""Who is asking: API keys, verified JWTs, and the client address (a secondary signal only).

API keys travel as ``X-API-Key: <key_id>.<secret>``. The keys file (YAML) never holds a secret, only
``hmac``: hex HMAC-SHA256 of the secret under a server pepper, so a leaked keys file without the
pepper (kept in the file or, better, in the environment) does not let anyone forge a key:

    pepper_env: PRIVAUDIT_GUARD_PEPPER      # or  pepper: <hex>
    keys:
      alice: {hmac: 9f2c..., tier: pro, revoked: false}

JWTs travel as ``Authorization: Bearer <token>`` and are verified against a JWKS file with only the
configured asymmetric algorithms, so ``alg: none`` and HS256-signed-with-the-public-key are refused.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import os
import re
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping, Optional

import jwt
import yaml

from privaudit.errors import ConfigError
from privaudit.guard.config import IdentityConfig, JwtConfig

log = logging.getLogger("privaudit.guard")

PEPPER_ENV = "PRIVAUDIT_GUARD_PEPPER"
KEY_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # no dots: the first "." in a presented key ends the id
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
_DUMMY_HMAC = "0" * 64  # compared against when the key id is unknown, so timing does not reveal ids
_ASYMMETRIC_KTY = frozenset({"RSA", "EC", "OKP"})

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Principal:
    """An authenticated caller. ``id`` is namespaced ("key:alice", "jwt:alice") so an API key and a
    token subject that happen to share a name never share limits or a monitoring history."""

    id: str
    tier: str
    kind: Literal["api_key", "jwt"]


class AuthError(Exception):
    """The request names no valid principal. The message is for the guard's log, never the client."""


# --- API keys -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _KeyRecord:
    hmac: str
    tier: str
    revoked: bool


def _digest(pepper: bytes, secret: str) -> str:
    return hmac.new(pepper, secret.encode(), hashlib.sha256).hexdigest()


def _read_keys_file(path: Path, *, missing_ok: bool = False) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        if missing_ok:
            return {}
        raise ConfigError(f"{path}: no such API keys file; create one with 'privaudit guard add-key'") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read it ({getattr(exc, 'strerror', None) or exc})") from None
    except yaml.YAMLError:
        raise ConfigError(f"{path}: not valid YAML; it should map 'keys' to key ids (see docs/guard.md)") from None
    if data is None:
        return {}
    if not isinstance(data, dict) or not isinstance(data.get("keys", {}), dict):
        raise ConfigError(f"{path}: an API keys file maps 'keys' to {{key_id: {{hmac, tier, revoked}}}} (see docs/guard.md)")
    return data


def _pepper(data: Mapping[str, Any], path: Path) -> bytes:
    name = data.get("pepper_env")
    if name:
        value = os.environ.get(str(name))
        if not value:
            raise ConfigError(f"{path}: pepper_env names {name}, which is not set; export the pepper in it")
        return value.encode()
    value = data.get("pepper") or os.environ.get(PEPPER_ENV)
    if not value:
        raise ConfigError(f"{path}: no pepper; set 'pepper' or 'pepper_env' in the file, or export {PEPPER_ENV}")
    return str(value).encode()


def _write_atomic(path: Path, data: Mapping[str, Any]) -> None:
    # Write beside the target and rename: a reader (or a SIGHUP reload) sees the old file or the new
    # one, never half of one. 0600 because the file may hold the pepper.
    text = "# privaudit guard API keys: HMACs of the secrets, never the secrets themselves\n"
    text += yaml.safe_dump(dict(data), sort_keys=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or Path("."))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def add_key(file: str | Path, key_id: str, tier: str = "default") -> str:
    """Create key ``key_id`` in ``file`` (made, with a fresh pepper, if absent) and return its secret.
    The client presents ``<key_id>.<secret>``; only the HMAC is stored, so the secret is shown once."""
    path = Path(file)
    if not KEY_ID.match(key_id):
        raise ConfigError(f"key id {key_id!r} must be 1-64 letters, digits, '-' or '_' (no dots)")
    data = _read_keys_file(path, missing_ok=True)
    keys = dict(data.get("keys") or {})
    if key_id in keys:
        raise ConfigError(f"{path}: key id {key_id!r} already exists; revoke it and choose a new id")
    if not data.get("pepper") and not data.get("pepper_env") and not os.environ.get(PEPPER_ENV):
        data["pepper"] = secrets.token_hex(32)
    secret = secrets.token_urlsafe(32)
    keys[key_id] = {"hmac": _digest(_pepper(data, path), secret), "tier": tier, "revoked": False}
    data["keys"] = keys
    _write_atomic(path, data)
    return secret


def revoke_key(file: str | Path, key_id: str) -> None:
    """Mark ``key_id`` revoked (kept, not deleted, so the id is never reissued by accident)."""
    path = Path(file)
    data = _read_keys_file(path)
    keys = dict(data.get("keys") or {})
    if key_id not in keys or not isinstance(keys[key_id], dict):
        raise ConfigError(f"{path}: no key with id {key_id!r}")
    keys[key_id] = {**keys[key_id], "revoked": True}
    data["keys"] = keys
    _write_atomic(path, data)


class KeyStore:
    """The API keys file, read once; build a new one to pick up changes (reload)."""

    def __init__(self, path: Path) -> None:
        data = _read_keys_file(path)
        self._records: dict[str, _KeyRecord] = {}
        for key_id, rec in (data.get("keys") or {}).items():
            if not isinstance(rec, dict) or not _HEX64.match(str(rec.get("hmac", ""))):
                raise ConfigError(f"{path}: keys.{key_id}: needs an 'hmac' of 64 hex digits (HMAC-SHA256 of the secret)")
            tier = rec.get("tier", "default")
            self._records[str(key_id)] = _KeyRecord(rec["hmac"].lower(), str(tier), bool(rec.get("revoked", False)))
        self._pepper = _pepper(data, path) if self._records else b""

    def authenticate(self, presented: str) -> Principal:
        key_id, dot, secret = presented.strip().partition(".")
        record = self._records.get(key_id)
        # Always compute and compare, even for unknown ids, so a miss costs what a hit costs.
        expected = record.hmac if record is not None else _DUMMY_HMAC
        ok = hmac.compare_digest(_digest(self._pepper, secret), expected)
        if not dot:  # no "id." prefix: what was sent may be a bare secret, which must not reach a log
            raise AuthError("API key without a key id (expected <id>.<secret>)")
        if record is None or not ok:
            raise AuthError(f"API key {key_id[:64]!r} is unknown or its secret is wrong")
        if record.revoked:
            raise AuthError(f"API key {key_id!r} is revoked")
        return Principal(f"key:{key_id}", record.tier, "api_key")


# --- JWT ------------------------------------------------------------------------------------------


class JwtVerifier:
    """Verifies bearer tokens against a JWKS file: signature, exp, iss, aud; principal = ``sub``."""

    def __init__(self, cfg: JwtConfig) -> None:
        self._cfg = cfg
        try:
            raw = json.loads(Path(cfg.jwks_file).read_text(encoding="utf-8"))
            keyset = jwt.PyJWKSet.from_dict(raw)
        except FileNotFoundError:
            raise ConfigError(f"{cfg.jwks_file}: no such JWKS file (identity.jwt.jwks_file)") from None
        except (OSError, ValueError, jwt.PyJWTError) as exc:
            raise ConfigError(f"{cfg.jwks_file}: not a usable JWKS file ({exc})") from None
        # Symmetric ("oct") keys are dropped: a shared secret in a JWKS would re-open algorithm confusion.
        self._keys = [k for k in keyset.keys if k._jwk_data.get("kty") in _ASYMMETRIC_KTY]
        if not self._keys:
            raise ConfigError(f"{cfg.jwks_file}: holds no RSA, EC or OKP public key")

    def _key_for(self, header: Mapping[str, Any]) -> jwt.PyJWK:
        kid = header.get("kid")
        if kid is None:
            if len(self._keys) == 1:
                return self._keys[0]
            raise AuthError("token has no kid and the JWKS holds several keys")
        for key in self._keys:
            if key.key_id == kid:
                return key
        raise AuthError(f"token kid {str(kid)[:64]!r} is not in the JWKS")

    def verify(self, token: str) -> Principal:
        cfg = self._cfg
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise AuthError(f"malformed token: {exc}") from None
        alg = header.get("alg")
        # Checked before any key is touched: "none", HS256 and friends never reach signature code.
        if alg not in cfg.algorithms:
            raise AuthError(f"token algorithm {str(alg)[:16]!r} is not allowed")
        key = self._key_for(header)
        pinned = key._jwk_data.get("alg")
        if pinned and pinned != alg:
            raise AuthError(f"token algorithm {alg} does not match its key's {pinned}")
        try:
            claims = jwt.decode(
                token, key.key, algorithms=list(cfg.algorithms), audience=cfg.audience, issuer=cfg.issuer,
                leeway=cfg.leeway, options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            raise AuthError(f"token rejected: {exc}") from None
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise AuthError("token has no usable sub")
        tier = claims.get(cfg.tier_claim, "default")
        return Principal(f"jwt:{sub}", tier if isinstance(tier, str) else "default", "jwt")


# --- the whole identity step ----------------------------------------------------------------------


MAX_CACHED_CLIENT_IPS = 4096


class Identity:
    """Everything that names a principal, built from ``identity`` in guard.yaml."""

    def __init__(self, cfg: IdentityConfig) -> None:
        self.keys = KeyStore(cfg.api_keys.file) if cfg.api_keys is not None else None
        self.jwt = JwtVerifier(cfg.jwt) if cfg.jwt is not None else None
        self._proxies: list[Network] = cfg.proxy_networks()
        # (peer, X-Forwarded-For values) -> client address: parsing addresses is the costly part of a
        # request's identity step, and a load balancer sends the same few combinations again and again.
        self._client_ips: dict[tuple[str, tuple[str, ...]], str] = {}

    def authenticate(self, headers: Mapping[str, str]) -> Principal:
        api_key: Optional[str] = headers.get("x-api-key")
        if api_key is not None:
            if self.keys is None:
                raise AuthError("API keys are not configured")
            return self.keys.authenticate(api_key)
        scheme, _, token = (headers.get("authorization") or "").partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            if self.jwt is None:
                raise AuthError("JWTs are not configured")
            return self.jwt.verify(token.strip())
        raise AuthError("no X-API-Key and no bearer token")

    def _trusted(self, addr: Address) -> bool:
        return any(addr in net for net in self._proxies)

    def client_ip(self, peer: str, forwarded_for: list[str]) -> str:
        """The peer address, or, when the peer is a trusted proxy, the nearest untrusted hop of
        X-Forwarded-For read right to left (the left end is whatever the client chose to write)."""
        key = (peer, tuple(forwarded_for))
        found = self._client_ips.get(key)
        if found is None:
            found = self._client_ip(peer, forwarded_for)
            if len(self._client_ips) >= MAX_CACHED_CLIENT_IPS:
                self._client_ips.clear()  # bounded: clients choose their X-Forwarded-For
            self._client_ips[key] = found
        return found

    def _client_ip(self, peer: str, forwarded_for: list[str]) -> str:
        try:
            addr: Address = ipaddress.ip_address(peer)
        except ValueError:
            return peer
        if not forwarded_for or not self._trusted(addr):
            return peer
        hops = [h.strip() for value in forwarded_for for h in value.split(",") if h.strip()]
        for hop in reversed(hops):
            try:
                addr = ipaddress.ip_address(hop)
            except ValueError:
                return str(addr)  # a garbled hop: stop at the last address we could vouch for
            if not self._trusted(addr):
                return str(addr)
        return str(addr)
