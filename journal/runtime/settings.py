"""Herald's settings: every ``HERALD_*`` variable, parsed once into one typed object.

``Settings.load()`` is the only entry point that reads the environment; everything
else receives the object it returns.  A bad value raises ``SettingsError`` whose
message names the variable and what is wrong with it, so the CLI can print it
and exit instead of showing a traceback.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

import orjson
from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from herald.journal.printers.spec import PrinterSpec

__all__ = ["Settings", "SettingsError"]

ENV_PREFIX = "HERALD_"


class SettingsError(Exception):
    """A ``HERALD_*`` variable is missing or invalid; the message says which and why."""


class Settings(BaseSettings):
    """The whole configuration. Field ``x`` is read from ``HERALD_X``; units are in the names."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="ignore", frozen=True, validate_default=True
    )

    # Infrastructure.  Empty means "start the embedded server under data_dir".
    redis_url: str = Field(
        "",
        description="Redis URL (`redis://`, `rediss://`, `unix://`), or `memory://` for an in-process journal. Empty: embedded Redis.",
    )
    database_url: str = Field(
        "", description="PostgreSQL URL (`postgresql+psycopg://…`). Empty: embedded PostgreSQL."
    )
    data_dir: Path = Field(
        Path(".herald"),
        description="Folder for the embedded servers' data and the generated dev JWT secret.",
    )
    host: str = Field(
        "127.0.0.1", description="Address `herald serve` listens on (`--host` overrides)."
    )
    port: int = Field(
        8000, ge=0, le=65535, description="Port `herald serve` listens on (`--port` overrides)."
    )
    public_url: str = Field("", description="URL printed for clients; default `http://HOST:PORT`.")

    # Envelope and journal.
    max_envelope_bytes: int = Field(
        65536,
        ge=256,
        le=16 * 1024 * 1024,
        description="Largest serialised envelope accepted; larger publishes are rejected (HTTP 413).",
    )
    stream_maxlen: int = Field(
        10000,
        ge=1,
        description="Approximate number of entries each user/topic stream keeps (`XADD MAXLEN ~`).",
    )
    idempotency_window_s: int = Field(
        300,
        ge=1,
        description="How long an idempotency key returns the first publish's id instead of publishing again.",
    )
    default_source: str = Field(
        "/herald",
        description="CloudEvents `source` prefix used when a publisher gives none; the stream's path follows it (`/herald/users/alice`).",
    )

    # Auth.
    jwt_algorithm: Literal["HS256", "RS256", "ES256"] = Field(
        "HS256",
        description="JWT algorithm: HS256 with `JWT_SECRET`, RS256/ES256 with `JWT_PUBLIC_KEY`.",
    )
    jwt_secret: SecretStr | None = Field(
        None,
        description="HS256 secret (at least 32 bytes). Empty with the embedded default: generated once into DATA_DIR/jwt_secret.",
    )
    jwt_public_key: str = Field(
        "", description="PEM public key, or a path to a PEM file, for RS256/ES256."
    )
    jwt_private_key: str = Field(
        "", description="PEM private key or path, only needed by `herald token` with RS256/ES256."
    )
    jwt_leeway_s: int = Field(
        5, ge=0, le=300, description="Clock skew tolerated when checking `exp`."
    )
    auth_cookie: str = Field(
        "herald_token", description="Name of the cookie a token may be sent in."
    )
    ticket_ttl_s: int = Field(
        30,
        ge=1,
        le=600,
        description="Lifetime of a single-use SSE ticket from `POST /api/events/ticket`.",
    )

    # Redis client.
    redis_max_connections: int = Field(
        3,
        ge=1,
        description="Connection pool size of the command client; with the hub's pub/sub connection a process holds at most this + 1 Redis connections. A burst waits for a free connection. On Redis Cluster: commands in flight at once (a burst waits); they share one connection per primary.",
    )
    redis_socket_timeout_s: float = Field(
        5.0,
        gt=0,
        description="Deadline of every Redis command, script and pipeline, retries included (then 503 `journal_unavailable`); also how long an unanswered PING on the pub/sub connection means Redis is dead. Blocking reads use their own client.",
    )
    redis_health_check_interval_s: int = Field(
        15, ge=0, description="Ping an idle pooled connection before use after this many seconds."
    )
    redis_cluster: bool = Field(
        False,
        description="`HERALD_REDIS_URL` names a node of a Redis Cluster (Redis 7+): commands follow the slot map, live delivery uses sharded pub/sub; a process holds one connection per primary for both.",
    )
    # NoDecode: the raw variable reaches _split_nodes, which accepts JSON or commas.
    redis_cluster_nodes: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="More cluster nodes to start from, as a JSON list or comma-separated `host:port` (only with `HERALD_REDIS_CLUSTER`).",
    )

    # Live delivery (SSE).
    topics: dict[str, list[str]] = Field(
        default_factory=dict,
        description='JSON map of readable topics to the roles that may read them, e.g. `{"printers": ["*"], "maintenance": ["ops"]}`; `*` is any signed-in user. Admins read every topic.',
    )
    client_queue: int = Field(
        1000,
        ge=10,
        description="Live messages buffered per SSE connection; a connection whose buffer fills is ended and resumes from its cursor.",
    )
    keepalive_s: float = Field(
        15.0, gt=0, description="Seconds between keepalive comments on an idle SSE stream."
    )
    retry_ms: int = Field(
        3000,
        ge=0,
        description="`retry:` sent at connect: how long EventSource waits before reconnecting.",
    )
    replay_page: int = Field(
        1000, ge=10, le=10000, description="Journal entries read per page while replaying."
    )
    max_replay_events: int = Field(
        100000,
        ge=1,
        description="Most events one connection replays; beyond that it gets a `herald.gap` (reason `backlog_limit`) and continues from the newest.",
    )
    max_connections_per_user: int = Field(
        8,
        ge=1,
        description="Concurrent SSE connections per user across all processes (HTTP 429 beyond).",
    )
    max_connections: int = Field(
        10000,
        ge=1,
        description="Concurrent SSE streams one process serves (`GET /api/events` and message streams together); beyond it new streams get HTTP 503 and readiness reports `degraded` (`stale` from 90 %).",
    )
    http_max_connections: int | None = Field(
        None,
        ge=2,
        description="Open HTTP connections one process accepts (idle and streaming alike); beyond it a new connection gets 503 `server_busy` and is closed. Empty: `HERALD_MAX_CONNECTIONS` + 256, so plain requests still answer while the SSE cap is reached. Must exceed `HERALD_MAX_CONNECTIONS`.",
    )
    http_max_header_bytes: int = Field(
        65536,
        ge=1024,
        description="Largest request line plus headers accepted; beyond it the request gets 431 and the connection is closed.",
    )
    http_header_timeout_s: float = Field(
        10.0,
        gt=0,
        description="Time a connection has to send a complete request line and headers (from when it opened, or when its previous response ended); then it is closed.",
    )
    http_keepalive_s: float = Field(
        5.0,
        gt=0,
        description="An idle keep-alive connection (no request after its last response) is closed after this long.",
    )
    gc_full_every: int = Field(
        1000,
        ge=1,
        description="A server process runs a full garbage collection after this many second-generation ones (Python's default: 10). A full collection walks every object of every open stream (~0.3 s at 10,000 streams), a pause for all of them; reference counting frees almost everything without it.",
    )
    connection_lease_s: int = Field(
        30,
        ge=3,
        description="A connection's slot is a lease renewed while it is open, so a killed process frees its slots within this time.",
    )
    replay_budget: int = Field(
        30,
        ge=1,
        description="Replays (connects or history reads that return past events) a user may make per window (HTTP 429 with Retry-After beyond).",
    )
    replay_window_s: int = Field(60, ge=1, description="The replay budget's sliding window.")
    shutdown_grace_s: float = Field(
        3.0,
        ge=0,
        description="On SIGTERM open streams end at once (clients reconnect elsewhere); other requests in flight get this long to finish.",
    )

    # Database.
    db_pool_size: int = Field(
        5, ge=1, description="Connections the database pool keeps open per process."
    )
    db_max_overflow: int = Field(
        5, ge=0, description="Extra connections the pool may open in a burst beyond `DB_POOL_SIZE`."
    )
    db_pool_timeout_s: float = Field(
        10.0,
        gt=0,
        description="How long a request waits for a free database connection before failing (HTTP 503).",
    )
    db_connect_timeout_s: float = Field(
        5.0, gt=0, description="Timeout for opening one database connection."
    )
    db_statement_timeout_ms: int = Field(
        30000,
        ge=0,
        description="Server-side statement timeout for every database session (0: none).",
    )

    # Chat message streams (Postgres journal).
    journal_batch: int = Field(
        16,
        ge=1,
        le=10000,
        description="The message writer flushes as soon as this many events are buffered.",
    )
    journal_flush_ms: int = Field(
        100,
        ge=1,
        description="The message writer flushes buffered events at least this often, even when no further event arrives.",
    )
    journal_buffer_max: int = Field(
        10000,
        ge=1,
        description="Most events the message writer holds while the database is failing; beyond it `emit` raises `WriterOverloaded` (nothing is dropped silently).",
    )
    journal_retry_max_s: float = Field(
        5.0,
        gt=0,
        description="Longest pause between retries of a failed flush (exponential backoff from 50 ms).",
    )
    producer_heartbeat_s: float = Field(
        10.0,
        gt=0,
        description="How often a producer refreshes `messages.heartbeat_at` while it streams.",
    )
    producer_stale_s: float = Field(
        90.0,
        gt=0,
        description="A streaming message whose heartbeat is older than this ends its readers with `producer_stale`.",
    )
    message_page: int = Field(
        500,
        ge=1,
        le=10000,
        description="Rows read per page when a message stream is replayed from PostgreSQL.",
    )
    message_watchdog_s: float = Field(
        5.0,
        gt=0,
        description="How often an open message stream checks its message's status and heartbeat.",
    )

    # Workers.
    worker_concurrency: int = Field(
        4, ge=1, description="Tasks one worker process runs at the same time."
    )
    worker_in_process: bool = Field(
        True,
        description="`herald serve` also runs a worker in its own process (turn off when `herald worker` processes run).",
    )
    worker_heartbeat_s: float = Field(
        5.0, gt=0, description="How often a worker records that it is alive."
    )
    worker_stale_s: float = Field(
        30.0,
        gt=0,
        description="Readiness reports `degraded` when no worker heartbeat is newer than this.",
    )
    task_max_attempts: int = Field(
        3,
        ge=1,
        description="Attempts per task before it goes to the dead-letter stream (a task kind may set its own).",
    )
    task_backoff_s: float = Field(
        1.0,
        gt=0,
        description="Delay before the first retry of a failed task; doubles with each attempt.",
    )
    task_visibility_timeout_s: float = Field(
        60.0,
        gt=0,
        description="A task claimed but not acknowledged for this long (its worker died) is reclaimed by another worker.",
    )
    task_result_ttl_s: int = Field(
        86400, ge=1, description="How long a task's final result is kept for status lookups."
    )
    ingest_max_tokens: int = Field(
        200000,
        ge=1,
        description="Most tokens (words) kept from one source; a longer source is truncated and its `completed` event says `limited: true`.",
    )
    ingest_chunk_tokens: int = Field(300, ge=10, description="Tokens (words) per stored chunk.")
    ingest_max_chars: int = Field(
        2_000_000,
        ge=1,
        description="Most characters kept from one source (or attachment), whatever its words: text without spaces is one long token, and this bounds it; beyond it the source is truncated and says `limited: true`.",
    )
    extract_cpu_s: int = Field(
        10,
        ge=1,
        description="CPU seconds one PDF's text extraction may use (in a child process); beyond it the task fails with `extraction_limit`.",
    )
    extract_memory_mb: int = Field(
        512,
        ge=64,
        description="Address space (MB) of the child process that extracts one PDF's text; beyond it the task fails with `extraction_limit`.",
    )
    ingest_max_upload_bytes: int = Field(
        10485760,
        ge=1,
        description="Largest file accepted by `POST /api/sources` and `POST /api/attachments` (HTTP 413 beyond).",
    )
    connector_roots: list[str] = Field(
        default_factory=list,
        description='JSON list of directories a connector source may read, e.g. `["/srv/docs"]`; empty: connectors are refused.',
    )
    oauth_redirect_url: str = Field(
        "",
        description="Redirect URI registered with OAuth authorization servers; default `PUBLIC_URL/api/oauth/callback`.",
    )
    oauth_client_name: str = Field(
        "Herald",
        description="Client name used for dynamic client registration with OAuth authorization servers.",
    )
    secret_key: SecretStr | None = Field(
        None,
        description="Key (at least 32 bytes) that encrypts OAuth tokens at rest. Empty: derived from `JWT_SECRET`.",
    )
    oauth_state_ttl_s: int = Field(
        600,
        ge=30,
        le=3600,
        description="How long an OAuth authorization URL stays usable: the browser must come back to the callback within this time.",
    )
    oauth_allowed_networks: list[str] = Field(
        default_factory=list,
        description='JSON list of networks (CIDR) the OAuth worker may reach although they are loopback, private, link-local or otherwise not global, e.g. `["10.20.0.0/16"]` for a self-hosted authorization server. Empty: only global addresses.',
    )
    oauth_http_timeout_s: float = Field(
        10.0,
        gt=0,
        description="Timeout of each request to an OAuth authorization server (metadata, registration, token exchange).",
    )

    # Member verification (a server-to-server proxy to an association's member directory).
    member_directory_url: str = Field(
        "",
        description="Root URL of the member directory (`http(s)://…`); a lookup calls `GET {root}/customers/{uuid}`. Any address is accepted (operator configuration). Empty: `GET /api/members/{uuid}/verification` answers 503 `member_directory_not_configured`.",
    )
    member_directory_key: SecretStr | None = Field(
        None,
        description="API key sent as `Authorization: Basic {key}`, exactly as given. Required when `MEMBER_DIRECTORY_URL` is set; never logged or returned.",
    )
    member_cache_s: int = Field(
        14400,
        ge=0,
        description="How long a verified member is cached in Redis (0: no cache). Not-found answers are never cached.",
    )
    member_timeout_s: float = Field(
        5.0,
        gt=0,
        description="Timeout of one call to the member directory (connect, each read, and the whole call).",
    )
    member_max_concurrent_calls: int = Field(
        16,
        ge=1,
        description="Most calls to the member directory one process makes at the same time; beyond it a lookup answers 503 `member_directory_busy` with Retry-After.",
    )

    # Printers over SNMP.
    printers: list[PrinterSpec] = Field(
        default_factory=list,
        description='JSON list of printers registered (upserted) at startup, each `{"name", "model", "host", "port"?: 161, "community"?: "public"}`; the same objects `POST /api/printers` takes.',
    )
    printer_probe: bool = Field(
        True,
        description="Probe printers in `herald worker` processes and in `herald serve`'s in-process worker (`WORKER_IN_PROCESS`).",
    )
    printer_probe_interval_s: float = Field(
        30.0,
        gt=0,
        description="Each printer is probed once per interval, by one process across all replicas; a dead prober's printers are taken over within one interval.",
    )
    printer_probe_timeout_s: float = Field(
        5.0,
        gt=0,
        description="Longest one probe of one printer may take (all its SNMP requests); must be below the interval.",
    )
    printer_probe_concurrency: int = Field(
        32, ge=1, le=1000, description="Printers one process probes at the same time."
    )
    printer_fresh_s: float = Field(
        90.0,
        gt=0,
        description="Readiness check `printer_probe` is `ok` while every printer's last *success* is at most this old.",
    )
    printer_stale_s: float = Field(
        600.0,
        gt=0,
        description="Readiness check `printer_probe` is `stale` while the oldest last success of a printer is at most this old, `fail` beyond.",
    )

    # Maintenance: the scheduler, its runs, retention by age (0 keeps forever).
    scheduler_in_process: bool = Field(
        True,
        description="`herald serve` also runs the maintenance scheduler (turn off when `herald scheduler` processes run; running both is safe, just redundant).",
    )
    scheduler_catchup_s: int = Field(
        3600,
        ge=0,
        description="A tick missed while no scheduler ran is run once at start-up if it is at most this old; an older one is recorded as `skipped`.",
    )
    scheduler_poll_s: float = Field(
        10.0,
        gt=0,
        le=60,
        description="Longest a scheduler sleeps between passes (it wakes earlier for a due tick); job changes are seen within this time.",
    )
    scheduler_stale_s: float = Field(
        120.0,
        gt=0,
        description="Readiness reports the `scheduler` check `stale` when no scheduler finished a pass within this time.",
    )
    maintenance_queue: str = Field(
        "maintenance",
        pattern=r"^[A-Za-z0-9_.@|:+=-]{1,200}$",
        description="Task queue maintenance runs travel on (workers read it by default; another name needs `herald worker --queue`).",
    )
    maintenance_heartbeat_s: float = Field(
        10.0, gt=0, description="How often a running maintenance run refreshes `heartbeat_at`."
    )
    maintenance_stale_s: float = Field(
        300.0,
        gt=0,
        description="A `running` run whose heartbeat is older than this is marked `failed` with message `abandoned` (keep it above `TASK_VISIBILITY_TIMEOUT_S`, so a lost worker's run is taken over first).",
    )
    message_retention_s: int = Field(
        2592000,
        ge=0,
        description="Message events older than this are deleted by `message_events_retention` (0: kept forever).",
    )
    stream_retention_s: int = Field(
        604800,
        ge=0,
        description="User and topic stream entries older than this are trimmed by `stream_retention` (`XTRIM MINID`), on top of `STREAM_MAXLEN` (0: by length only).",
    )
    upload_retention_s: int = Field(
        0,
        ge=0,
        description="Uploaded sources (their files and chunks) older than this are deleted by `uploads_retention`; connector sources never are (0: kept forever).",
    )
    attachment_retention_s: int = Field(
        2592000,
        ge=0,
        description="Attachments older than this are deleted by `uploads_retention` (0: kept forever).",
    )
    dead_letter_retention_s: int = Field(
        1209600,
        ge=0,
        description="Dead-letter task entries older than this are trimmed by `dead_letter_retention` (0: kept, up to `STREAM_MAXLEN`).",
    )
    printer_status_retention_s: int = Field(
        2592000,
        ge=0,
        description="Printer status cache rows whose last probe attempt is older than this (printers no probe reaches any more) are deleted by `printer_status_retention`; the printer then reads as not probed yet (0: kept forever).",
    )
    retention_batch: int = Field(
        5000,
        ge=1,
        le=100000,
        description="Rows deleted per transaction (and stream trims per pipeline) by the retention jobs, so none holds locks for long.",
    )

    # Page events: the window watcher every API process runs, the /current cache.
    page_events_watcher: bool = Field(
        True,
        description="API processes announce page event windows opening and closing (`page_event.changed`); each transition is published once however many processes watch.",
    )
    page_events_poll_s: float = Field(
        5.0,
        gt=0,
        le=60,
        description="Longest the page event watcher sleeps between passes (it wakes at the next start or end it knows of, and at once on a change made through its own process).",
    )
    page_events_catchup_s: int = Field(
        300,
        ge=0,
        description="A window transition that passed while no API process watched is still announced when it is at most this old.",
    )
    page_events_cache_routes: int = Field(
        10000,
        ge=0,
        description="Routes whose active page events each process keeps for `GET /api/page-events/current` (invalidated per route on every change; 0: no cache).",
    )

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Log level."
    )

    @field_validator("jwt_secret")
    @classmethod
    def _secret_long_enough(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and v.get_secret_value() == "":
            return None
        if v is not None and len(v.get_secret_value().encode()) < 32:
            raise ValueError("must be at least 32 bytes for HS256")
        return v

    @field_validator("secret_key")
    @classmethod
    def _key_long_enough(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and v.get_secret_value() == "":
            return None
        if v is not None and len(v.get_secret_value().encode()) < 32:
            raise ValueError("must be at least 32 bytes")
        return v

    @field_validator("member_directory_url")
    @classmethod
    def _directory_url(cls, v: str) -> str:
        if not v:
            return v
        try:
            parts = urlsplit(v)
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError as e:
            raise ValueError(f"is not a valid URL: {e}") from e
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an absolute http:// or https:// URL")
        if parts.username is not None or parts.password is not None:
            raise ValueError("must not contain credentials (use HERALD_MEMBER_DIRECTORY_KEY)")
        if parts.query or parts.fragment:
            raise ValueError("must not have a query or fragment")
        return v.rstrip("/")

    @field_validator("member_directory_key")
    @classmethod
    def _directory_key(cls, v: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if v is not None and v.get_secret_value() == "":
            v = None
        if v is None and info.data.get("member_directory_url"):
            raise ValueError("must be set when HERALD_MEMBER_DIRECTORY_URL is")
        return v

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, v: str) -> str:
        if v and not v.startswith(("redis://", "rediss://", "unix://", "memory://")):
            raise ValueError("must start with redis://, rediss://, unix:// or memory://")
        return v

    @field_validator("redis_cluster_nodes", mode="before")
    @classmethod
    def _split_nodes(cls, v: object) -> object:
        if isinstance(v, str):
            text = v.strip()
            if text.startswith("["):
                return orjson.loads(text)
            return [n.strip() for n in text.split(",") if n.strip()]
        return v

    @field_validator("redis_cluster_nodes")
    @classmethod
    def _node_addresses(cls, v: list[str]) -> list[str]:
        for node in v:
            host, sep, port = node.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"{node!r} is not host:port")
        return v

    @field_validator("database_url")
    @classmethod
    def _database_scheme(cls, v: str) -> str:
        if v.startswith(("postgres://", "postgresql://")):
            # Accept the URL people copy from their provider; we always talk psycopg 3.
            return "postgresql+psycopg://" + v.split("://", 1)[1]
        if v and not v.startswith("postgresql+psycopg://"):
            raise ValueError("must be a postgresql:// or postgresql+psycopg:// URL")
        return v

    @model_validator(mode="after")
    def _cluster_url(self) -> Settings:
        if self.redis_cluster and not self.redis_url.startswith(("redis://", "rediss://")):
            raise ValueError(
                "HERALD_REDIS_CLUSTER needs HERALD_REDIS_URL to be a redis:// or rediss:// node"
            )
        if self.redis_cluster_nodes and not self.redis_cluster:
            raise ValueError("HERALD_REDIS_CLUSTER_NODES is set but HERALD_REDIS_CLUSTER is not")
        return self

    @model_validator(mode="after")
    def _printer_timings(self) -> Settings:
        if self.printer_probe_timeout_s >= self.printer_probe_interval_s:
            raise ValueError(
                "HERALD_PRINTER_PROBE_TIMEOUT_S must be below HERALD_PRINTER_PROBE_INTERVAL_S"
            )
        if self.printer_stale_s < self.printer_fresh_s:
            raise ValueError("HERALD_PRINTER_STALE_S must not be below HERALD_PRINTER_FRESH_S")
        return self

    @field_validator("oauth_allowed_networks", mode="before")
    @classmethod
    def _networks(cls, v: object) -> object:
        from herald.journal.oauth.addresses import parse_networks

        if isinstance(v, list):
            parse_networks(str(x) for x in v)  # raises ValueError naming the bad one
        return v

    @model_validator(mode="after")
    def _http_cap(self) -> Settings:
        if self.http_max_connections is not None and (
            self.http_max_connections <= self.max_connections
        ):
            raise ValueError(
                "HERALD_HTTP_MAX_CONNECTIONS must exceed HERALD_MAX_CONNECTIONS "
                "(every SSE stream is an HTTP connection, and plain requests need room too)"
            )
        return self

    @property
    def http_connection_cap(self) -> int:
        """Open HTTP connections one process accepts (``HERALD_HTTP_MAX_CONNECTIONS``)."""
        return self.http_max_connections or self.max_connections + 256

    @property
    def extract_limits(self) -> dict[str, int]:
        """The extraction limits, as ``ExtractLimits(**settings.extract_limits)``."""
        return {
            "cpu_s": self.extract_cpu_s,
            "memory_mb": self.extract_memory_mb,
            "max_chars": self.ingest_max_chars,
        }

    @property
    def embedded(self) -> bool:
        """True when Herald must start its own Redis and PostgreSQL."""
        return not self.redis_url or not self.database_url

    @classmethod
    def load(cls, **overrides: object) -> Settings:
        """Parse the environment once; raise ``SettingsError`` naming the bad variable."""
        try:
            return cls(**overrides)  # type: ignore[arg-type]
        except ValidationError as e:
            problems = []
            for err in e.errors():
                if not err["loc"]:  # a rule between settings names them in its message
                    problems.append(str(err["msg"]).removeprefix("Value error, "))
                    continue
                field = str(err["loc"][0])
                var = ENV_PREFIX + field.upper()
                # Inside a list or object (HERALD_PRINTERS): which item and field.
                where = ".".join(str(p) for p in err["loc"][1:])
                raw = os.environ.get(var)
                shown = f" (got {raw!r})" if raw is not None and "secret" not in field else ""
                at = f" at {where}" if where else ""
                problems.append(f"{var}{at}: {err['msg']}{shown}")
            raise SettingsError("invalid configuration:\n  " + "\n  ".join(problems)) from e
