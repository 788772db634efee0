"""Run grants (issue 14, part 2): what lets an executor resolve for one run, and only that run.

The orchestrator (role `orchestrator`) issues a grant when it starts a run and ends the run when
it is over. The grant is a token the executor sends with each resolve:

    sgr_<base64url(body)>.<base64url(HMAC-SHA256(mac key, body))>
    body = version (1 byte) | length of the master key id (1 byte) | key id | JSON claims

The claims (grant id, workspace, workflow, execution, trigger, the two user ids and the run user,
keys, expiry) are what the resolve uses, so a grant is checked without a database read. The MAC
key is derived (HKDF-SHA256, info "secrets.v1/run-grant") from the master key named in the token:
the primary when it was issued. Grants survive adding a key and making it primary; removing the
key they were issued under invalidates them. The token is returned once and never stored: the
database keeps the grant's id and metadata (table run_grants), which say whether it was revoked
or its run ended.

Revocation reaches every replica through the change notifications the resolve cache listens to
(service/store/notify.py): `RevokeRunGrant` and `EndRun` notify the tag `g:<grant id>:<expiry>` for
each grant they stop (`g*`, "reload", when there are too many for one notification). Each
replica keeps the set of stopped grants that have not expired yet, loaded when its listener
connects and updated on each notification; the replica that made the change updates its own set
before the call returns. While the listener is disconnected (or still loading), the set may miss
a revocation, so every grant check reads the database instead: a possibly revoked grant is never
accepted (and a database that cannot be read is UNAVAILABLE).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import logging
import random
import secrets as pysecrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from service.app.context import Caller
from service.app.pins import RunPins, pins_tag
from service.crypto.keyring import Keyring, UnknownMasterKey
from service.domain.errors import FailedPrecondition, FieldViolation, InvalidArgument, NotFound, PermissionDenied
from service.domain.keys import key_problem, require_id
from service.domain.limits import DEFAULT_TTL_SECONDS, MAX_GRANT_KEYS, MAX_TOKEN_CHARS, MAX_TTL_SECONDS
from service.domain.model import Trigger
from service.domain.resolution import run_user_for
from service.store import grants as store
from service.store import pins as pin_store
from service.store import repository as repo
from service.store.notify import notify
from service.store.pool import Database
from service.watched import WatchedFile

log = logging.getLogger(__name__)

TOKEN_PREFIX: Final = "sgr_"  # noqa: S105 (a prefix, not a token)
TOKEN_VERSION: Final = 1
MAC_INFO: Final = b"secrets.v1/run-grant"
# Verified tokens remembered per replica: at most this many, each of at most this many characters.
VERIFIED_MEMO_ENTRIES: Final = 1024
VERIFIED_MEMO_TOKEN_CHARS: Final = 4096
# Stopped grants per notification; past it the notification says "reload" (`g*`). A tag is at
# most 2 + 22 + 1 + 10 characters: 100 of them stay far below Postgres's 8,000-byte payload.
MAX_TAGS_PER_NOTIFICATION: Final = 100
RELOAD_TAG: Final = "g*"
# Grants and ended runs are forgotten this long after they could last have been used.
PURGE_AFTER: Final = timedelta(days=7)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    # Strict: one token, one spelling. A character outside the URL-safe alphabet, padding, or
    # unused low bits in the last character are errors (b64decode alone also took `+`/`/` and
    # extra `=`, so one grant could be written several ways).
    data = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    if _b64(data) != text:
        raise binascii.Error("not the canonical spelling")
    return data


def grant_tag(grant_id: str, expires_at: float) -> str:
    return f"g:{grant_id}:{int(expires_at) + 1}"


@dataclass(frozen=True, slots=True)
class Grant:
    """What a verified grant token says."""

    id: str
    workspace_id: str
    workflow_id: str
    execution_id: str
    trigger: Trigger
    triggering_user_id: str
    workflow_owner_id: str
    run_user_id: str
    # The only keys the run may resolve; None: any.
    keys: frozenset[str] | None
    expires_at: float  # Unix time


class GrantRefused(PermissionDenied):
    """A grant that cannot be used: malformed, forged, tampered, expired, revoked or ended."""


class GrantCodec:
    """Makes and checks grant tokens (see the module docstring for the format)."""

    def __init__(self, keyring: WatchedFile[Keyring]) -> None:
        self._keyring = keyring
        # Tokens already verified under the keyring in use, so the executors of a run (each
        # sending the same token on every resolve) skip decoding and the MAC. Only verified
        # grants; expiry and revocation are still checked on every use; a changed keyring
        # (a removed key) empties it.
        self._verified: dict[str, Grant] = {}
        self._verified_under: Keyring | None = None

    def seal(self, grant: Grant) -> str:
        keyring = self._keyring.current()
        key_id = keyring.primary_id
        claims = {
            "id": grant.id,
            "ws": grant.workspace_id,
            "wf": grant.workflow_id,
            "ex": grant.execution_id,
            "tr": int(grant.trigger),
            "tu": grant.triggering_user_id,
            "ou": grant.workflow_owner_id,
            "ru": grant.run_user_id,
            "k": sorted(grant.keys) if grant.keys is not None else None,
            "exp": int(grant.expires_at),
        }
        kid = key_id.encode("ascii")
        body = bytes([TOKEN_VERSION, len(kid)]) + kid + json.dumps(claims, separators=(",", ":")).encode("utf-8")
        tag = hmac.new(keyring.derive(key_id, MAC_INFO), body, hashlib.sha256).digest()
        return f"{TOKEN_PREFIX}{_b64(body)}.{_b64(tag)}"

    def open(self, token: str, *, now: float | None = None, check_expiry: bool = True) -> Grant:
        """The grant a token carries; GrantRefused when it is malformed, fails its MAC, was
        issued under a master key the keyring no longer holds, or (with `check_expiry`) expired."""
        keyring = self._keyring.current()
        if keyring is not self._verified_under:
            self._verified = {}
            self._verified_under = keyring
        grant = self._verified.get(token)
        if grant is None:
            grant = self._verify(token, keyring)
            if len(token) <= VERIFIED_MEMO_TOKEN_CHARS:  # at most 4 MiB of tokens in all
                if len(self._verified) >= VERIFIED_MEMO_ENTRIES:
                    self._verified.pop(next(iter(self._verified)))
                self._verified[token] = grant
        if check_expiry and grant.expires_at <= (time.time() if now is None else now):
            raise GrantRefused(f"the run grant {grant.id} has expired")
        return grant

    def _verify(self, token: str, keyring: Keyring) -> Grant:
        if len(token) > MAX_TOKEN_CHARS or not token.startswith(TOKEN_PREFIX):
            raise GrantRefused("the run grant is malformed")
        encoded_body, dot, encoded_tag = token[len(TOKEN_PREFIX) :].partition(".")
        try:
            body = _unb64(encoded_body)
            tag = _unb64(encoded_tag)
        except (binascii.Error, ValueError):
            raise GrantRefused("the run grant is malformed") from None
        if not dot or len(body) < 3 or body[0] != TOKEN_VERSION or len(tag) != 32:
            raise GrantRefused("the run grant is malformed")
        end = 2 + body[1]
        try:
            key_id = body[2:end].decode("ascii")
            mac_key = keyring.derive(key_id, MAC_INFO)
        except (UnicodeDecodeError, UnknownMasterKey):
            raise GrantRefused("the run grant was not issued under a master key this service holds") from None
        if not hmac.compare_digest(hmac.new(mac_key, body, hashlib.sha256).digest(), tag):
            raise GrantRefused("the run grant failed verification (forged or altered)")
        # From here on the claims are ours: issued by this service, unaltered.
        claims = json.loads(body[end:])
        keys = claims["k"]
        return Grant(
            id=claims["id"],
            workspace_id=claims["ws"],
            workflow_id=claims["wf"],
            execution_id=claims["ex"],
            trigger=Trigger(claims["tr"]),
            triggering_user_id=claims["tu"],
            workflow_owner_id=claims["ou"],
            run_user_id=claims["ru"],
            keys=frozenset(keys) if keys is not None else None,
            expires_at=float(claims["exp"]),
        )


class StoppedGrants:
    """This replica's set of revoked and ended grants that have not expired (see the module
    docstring); follows the change notifications of service/store/notify.py `Invalidations`."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._stopped: dict[str, float] = {}  # grant id -> when it expires (Unix time)
        self._prune_at = 1024
        # True while the set is known to hold every stopped grant: the listener is connected
        # and the set was loaded after it began listening.
        self.ready = False
        self._generation = 0
        self._loading: asyncio.Task[None] | None = None
        self.database_checks = 0

    # -- followed notifications (called by Invalidations) --

    def listening(self) -> None:
        """The listener (re)connected: anything may have been missed, so load the set again."""
        self._reload()

    def lost(self) -> None:
        self.ready = False
        self._generation += 1
        if self._loading is not None:
            self._loading.cancel()

    def changed(self, tags: Iterable[str]) -> None:
        for tag in tags:
            if tag == RELOAD_TAG:
                self._reload()
            elif tag.startswith("g:"):
                grant_id, _, expires = tag[2:].rpartition(":")
                try:
                    self.add(grant_id, float(expires))
                except ValueError:
                    self._reload()

    # -- the set --

    def add(self, grant_id: str, expires_at: float) -> None:
        self._stopped[grant_id] = expires_at
        if len(self._stopped) > self._prune_at:
            now = time.time()
            self._stopped = {g: e for g, e in self._stopped.items() if e > now}
            self._prune_at = max(1024, 2 * len(self._stopped))

    def _reload(self) -> None:
        self.ready = False
        self._generation += 1
        if self._loading is not None:
            self._loading.cancel()
        self._loading = asyncio.get_running_loop().create_task(self._load(self._generation), name="stopped-grants")

    async def _load(self, generation: int) -> None:
        delay = 0.2
        while generation == self._generation:
            try:
                async with self._db.connection() as conn:
                    rows = await store.stopped_grants(conn)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "cannot load the stopped run grants (%s); checking grants in the database", type(exc).__name__
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            if generation == self._generation:
                for grant_id, expires_at in rows:
                    self._stopped[grant_id] = expires_at.timestamp()
                self.ready = True
            return

    async def is_stopped(self, grant: Grant) -> bool:
        if self.ready:
            return grant.id in self._stopped
        # Fail closed: the set may miss a revocation, so the database decides.
        self.database_checks += 1
        async with self._db.connection() as conn:
            live = await store.grant_live(conn, grant.id)
        if not live:
            self.add(grant.id, grant.expires_at)
        return not live

    async def close(self) -> None:
        self._generation += 1
        if self._loading is not None:
            self._loading.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._loading


def _ttl(ttl_seconds: int) -> int:
    if ttl_seconds < 0:
        raise InvalidArgument(
            "ttl_seconds must not be negative (0 means the default, 3600)",
            [FieldViolation("ttl_seconds", "must not be negative")],
        )
    return min(ttl_seconds or DEFAULT_TTL_SECONDS, MAX_TTL_SECONDS)


def _grant_keys(keys: Sequence[str]) -> frozenset[str] | None:
    if not keys:
        return None
    if len(keys) > MAX_GRANT_KEYS:
        raise InvalidArgument(
            f"a grant names at most {MAX_GRANT_KEYS} keys (leave keys empty for any key)",
            [FieldViolation("keys", f"more than {MAX_GRANT_KEYS} keys")],
        )
    for i, key in enumerate(keys):
        problem = key_problem(key)
        if problem:
            raise InvalidArgument(f"keys[{i}]: {problem}", [FieldViolation(f"keys[{i}]", problem)])
    return frozenset(keys)


class GrantService:
    """The orchestrator's use cases (issue, revoke, end a run) and the resolver's grant check."""

    def __init__(self, db: Database, codec: GrantCodec, stopped: StoppedGrants, pins: RunPins | None = None) -> None:
        self._db = db
        self.codec = codec
        self.stopped = stopped
        self.pins = pins

    async def issue(
        self,
        caller: Caller,
        workspace_id: str,
        workflow_id: str,
        execution_id: str,
        trigger: Trigger | None,
        triggering_user_id: str,
        workflow_owner_id: str,
        ttl_seconds: int,
        keys: Sequence[str],
    ) -> tuple[str, Grant]:
        require_id("workspace_id", workspace_id)
        require_id("workflow_id", workflow_id)
        require_id("execution_id", execution_id)
        run_user = run_user_for(trigger, triggering_user_id, workflow_owner_id)
        assert trigger is not None  # run_user_for refuses None
        ttl = _ttl(ttl_seconds)
        allowed = _grant_keys(keys)
        now = datetime.now(UTC).replace(microsecond=0)
        expires = now + timedelta(seconds=ttl)
        grant = Grant(
            id=_b64(pysecrets.token_bytes(16)),
            workspace_id=workspace_id,
            workflow_id=workflow_id,
            execution_id=execution_id,
            trigger=trigger,
            # Both as the orchestrator gave them: a resolve that repeats them must match.
            triggering_user_id=triggering_user_id,
            workflow_owner_id=workflow_owner_id,
            run_user_id=run_user,
            keys=allowed,
            expires_at=expires.timestamp(),
        )
        token = self.codec.seal(grant)
        async with self._db.transaction() as conn:
            await store.lock_execution(conn, workspace_id, execution_id)
            if await store.execution_ended(conn, workspace_id, execution_id):
                raise FailedPrecondition(f"execution {execution_id!r} has ended (EndRun); it gets no new grant")
            await store.insert_grant(
                conn,
                store.GrantRow(grant.id, workspace_id, workflow_id, execution_id, run_user, caller.principal, expires),
            )
            await repo.insert_audit(
                conn,
                repo.AuditRecord(
                    principal=caller.principal,
                    action="grant.issue",
                    outcome="ok",
                    user_id=run_user,
                    workspace_id=workspace_id,
                    execution_id=execution_id,
                    detail=(
                        f"grant {grant.id}; workflow {workflow_id}; trigger {trigger.name}; "
                        f"expires {expires.isoformat()}; keys {'any' if allowed is None else len(allowed)}"
                    ),
                ),
            )
            if random.random() < 0.01:  # now and then, forget what can no longer matter
                await store.purge_expired(conn, now - timedelta(seconds=MAX_TTL_SECONDS) - PURGE_AFTER)
        return token, grant

    async def revoke(self, caller: Caller, workspace_id: str, token: str, grant_id: str) -> bool:
        require_id("workspace_id", workspace_id)
        if bool(token) == bool(grant_id):
            raise InvalidArgument(
                "name the grant to revoke by its token (grant) or its id (grant_id), one of the two",
                [FieldViolation("grant_id", "give grant or grant_id")],
            )
        if token:
            # An expired grant can still be revoked (nothing changes for it, but it is recorded).
            grant_id = self.codec.open(token, check_expiry=False).id
        else:
            require_id("grant_id", grant_id)
        async with self._db.transaction() as conn:
            found = await store.revoke_grant(conn, workspace_id, grant_id)
            if found is None:
                raise NotFound(f"workspace {workspace_id!r} has no run grant {grant_id!r}")
            revoked, expires_at = found
            if revoked:
                await self._notify(conn, [(grant_id, expires_at.timestamp())])
            await repo.insert_audit(
                conn,
                repo.AuditRecord(
                    principal=caller.principal,
                    action="grant.revoke",
                    outcome="ok" if revoked else "already stopped",
                    workspace_id=workspace_id,
                    detail=f"grant {grant_id}",
                ),
            )
        self.stopped.add(grant_id, expires_at.timestamp())
        return revoked

    async def end_run(self, caller: Caller, workspace_id: str, execution_id: str) -> int:
        require_id("workspace_id", workspace_id)
        require_id("execution_id", execution_id)
        async with self._db.transaction() as conn:
            await store.lock_execution(conn, workspace_id, execution_id)
            ended = await store.end_execution(conn, workspace_id, execution_id, caller.principal)
            stopped = [(grant_id, expires_at.timestamp()) for grant_id, expires_at in ended]
            if stopped:
                await self._notify(conn, stopped)
            # The run's pins (app/pins.py) end with it, on every replica.
            unpinned = await pin_store.end_execution(conn, workspace_id, execution_id)
            await notify(conn, [pins_tag(workspace_id, execution_id)])
            await repo.insert_audit(
                conn,
                repo.AuditRecord(
                    principal=caller.principal,
                    action="run.end",
                    outcome="ok",
                    workspace_id=workspace_id,
                    execution_id=execution_id,
                    detail=f"{len(ended)} grant(s) ended; {unpinned} pin(s) removed"
                    + "".join(f"; grant {g}" for g, _ in ended[:20]),
                ),
            )
        if self.pins is not None:
            self.pins.drop_run(workspace_id, execution_id)
        for grant_id, expires_at in stopped:
            self.stopped.add(grant_id, expires_at)
        return len(stopped)

    async def _notify(self, conn: Any, stopped: list[tuple[str, float]]) -> None:
        """Every replica adds the stopped grants to its set when this transaction commits."""
        if len(stopped) > MAX_TAGS_PER_NOTIFICATION:
            await notify(conn, [RELOAD_TAG])
        else:
            await notify(conn, [grant_tag(g, e) for g, e in stopped])

    async def check(self, token: str) -> Grant:
        """The grant a resolve may use: verified, unexpired, neither revoked nor ended."""
        grant = self.codec.open(token)
        if await self.stopped.is_stopped(grant):
            raise GrantRefused(f"the run grant {grant.id} was revoked or its run ended")
        return grant
