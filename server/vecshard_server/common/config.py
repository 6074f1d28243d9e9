"""Server settings and limits: one settings model for every role (pydantic-settings).

Precedence, highest first: command-line flags (for the options they expose) > VECSHARD_*
environment variables > the TOML config file named by VECSHARD_CONFIG (or `vecshard --config FILE`;
keys are the field names, e.g. `max_k = 1000`) > defaults. Child processes started by
`vecshard serve` inherit the environment, so one setting reaches every role.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)


class Settings(BaseSettings):
    """Limits and timeouts of a coordinator or shard worker."""

    model_config = SettingsConfigDict(env_prefix="VECSHARD_", frozen=True)

    max_message_bytes: int = Field(64 * 1024 * 1024, ge=1024, description="largest gRPC message sent or received")
    max_dim: int = Field(4096, ge=1, description="largest vector dimension of a collection")
    max_k: int = Field(4096, ge=1, description="largest k of a search")
    max_nlist: int = Field(65536, ge=1, description="largest nlist of an IVF collection")
    max_batch: int = Field(1_000_000, ge=1, description="most vectors, queries or ids in one request")
    max_collections: int = Field(1000, ge=1, description="most collections in a cluster")
    string_id_hash_bits: int = Field(
        63,
        ge=8,
        le=63,
        description="width of the hash that stores a string id (recorded per collection at creation); "
        "lower it only to test hash-collision handling",
    )
    max_payload_bytes: int = Field(
        1024 * 1024, ge=16, description="largest encoded payload (stored text included) of one point"
    )
    max_filter_conditions: int = Field(1024, ge=1, description="most conditions (and values) in one filter")
    filter_exact_ratio: float = Field(
        1.0, ge=0, description="a filtered IVF search is exact when matches <= ratio * vectors * nprobe / nlist"
    )
    max_vectors_per_shard: int = Field(100_000_000, ge=1, description="most vectors one shard holds per collection")
    train_threshold_factor: int = Field(
        39, ge=1, description="an IVF collection trains itself at factor * nlist vectors"
    )
    shard_timeout_s: float = Field(60.0, gt=0, description="per-shard deadline when the caller set none")
    train_timeout_s: float = Field(600.0, gt=0, description="deadline of each shard call made while training")
    grace_s: float = Field(5.0, ge=0, description="how long in-flight RPCs may finish on shutdown")
    write_quorum: int = Field(0, ge=0, description="replicas of a group that must persist a write (0: all)")
    hedge_delay_s: float = Field(0.1, ge=0, description="a read waits this long before also asking another replica")
    reshard_search_budget_ms: float = Field(
        0.0,
        ge=0,
        description="a reshard pauses its copy while the coordinator's recent search latency "
        "(an exponential average) is above this; 0: no latency throttle",
    )
    anti_entropy_s: float = Field(
        30.0, ge=0, description="coordinator: compare the replicas' digests this often (0: never)"
    )
    peer_sync_s: float = Field(
        10.0,
        ge=0,
        description="shard with peers: compare each collection with the peer replicas this often and merge "
        "a difference seen twice in a row (0: never; coordinators' anti-entropy still runs)",
    )
    tombstone_ttl_s: float = Field(
        7 * 24 * 3600.0,
        gt=0,
        description="shard: keep a removed id's tombstone this long; a replica down longer than this must be "
        "rebuilt from a peer (delete its data dir), or ids removed meanwhile can come back",
    )
    device: str = Field(
        "auto", description="where shards search trained IVF indexes: auto (a GPU when faiss sees one), cpu, cuda:N"
    )
    search_batching: bool = Field(True, description="coalesce concurrent searches of a shard into one faiss call")
    inline_search_work: int = Field(
        300_000,
        ge=0,
        description="searches of at most this many multiply-adds (vectors scanned x dim) run on the shard's event "
        "loop instead of a worker thread, when the partition is free to read (a thread hand-off costs more)",
    )
    search_coalescing: bool = Field(
        True, description="coordinators send concurrent small searches of one collection to the shards as one call"
    )
    wal_fsync: bool = Field(True, description="fsync the write-ahead log before acknowledging a write")
    checkpoint_interval_s: float = Field(300.0, gt=0, description="snapshot changed collections this often")
    checkpoint_wal_bytes: int = Field(256 * 1024 * 1024, ge=1, description="...or once the log grows this much")
    drain_s: float = Field(0.0, ge=0, description="on shutdown, wait this long after health NOT_SERVING")
    tls_cert: Path | None = Field(None, description="serve TLS with this certificate (PEM)")
    tls_key: Path | None = Field(None, description="...and this private key")
    tls_client_ca: Path | None = Field(None, description="require client certificates signed by this CA (mTLS)")
    shard_tls_ca: Path | None = Field(None, description="coordinator: trust shards signed by this CA")
    shard_tls_cert: Path | None = Field(None, description="coordinator: client certificate shown to shards")
    shard_tls_key: Path | None = Field(None, description="coordinator: its key")
    shard_tls_server_name: str = Field("", description="coordinator: expected shard certificate name (default: host)")
    api_keys_file: Path | None = Field(None, description="API keys (admin/read) for the public API; none: open")
    internal_token: str = Field(
        "",
        repr=False,
        description="shared secret of the internal plane: shards and embedders accept only callers "
        "that send it (coordinators, replica peers); empty: none (loopback, or mutual TLS with an internal CA)",
    )
    internal_token_file: Path | None = Field(None, description="...read from this file (e.g. a Kubernetes secret)")
    otel_exporter: str = Field("", description="OpenTelemetry span exporter: console or otlp (the otel extra)")
    models_file: Path | None = Field(None, description="model registry (TOML/JSON); built-in minilm without one")
    embedder: str = Field("", description="address of a `vecshard embedder`; empty: embed in the coordinator")
    max_embed_batch: int = Field(1024, ge=1, description="most texts or images in one request")
    max_text_chars: int = Field(100_000, ge=1, description="longest text accepted for embedding")
    max_image_bytes: int = Field(20 * 1024 * 1024, ge=1, description="largest encoded image accepted")
    # Per-request cost limits (docs/limits.md): a request over one gets RESOURCE_EXHAUSTED naming it.
    max_search_results: int = Field(
        1_000_000, ge=1, description="most (distance, id) results of one Search: nq * k (split bigger searches)"
    )
    max_search_scan: int = Field(
        1_000_000_000,
        ge=1,
        description="most vectors one Search may compare its queries with, estimated as nq * the vectors a query "
        "visits (FLAT or untrained IVF: the collection's count; IVF: count * nprobe / nlist)",
    )
    max_embed_chars: int = Field(
        2_000_000, ge=1, description="most characters of text in one Embed (or Add or Search sending texts)"
    )
    # Admission control (docs/limits.md): work in flight per process; beyond it RESOURCE_EXHAUSTED at
    # once, with a retry-after hint.
    max_inflight_bytes: int = Field(
        512 * 1024 * 1024,
        ge=1,
        description="coordinator: estimated memory (bytes of requests, copies and replies) of the large "
        "requests it works on at once",
    )
    small_request_bytes: int = Field(
        1024 * 1024,
        ge=0,
        description="coordinator: a request estimated at most this many bytes is small: it is admitted on a "
        "budget of its own (max_inflight_small_bytes), so large ones never hold it up",
    )
    max_inflight_small_bytes: int = Field(
        128 * 1024 * 1024, ge=1, description="coordinator: estimated memory of the small requests in flight at once"
    )
    max_inflight_embed_chars: int = Field(
        4_000_000,
        ge=1,
        description="embedding (in a coordinator or an embedder): characters (images: see docs/limits.md) of the "
        "large Embed requests in flight at once",
    )
    small_embed_chars: int = Field(
        8192,
        ge=0,
        description="embedding: a request of at most this many characters is small and has a budget of its own "
        "(max_inflight_small_embed_chars)",
    )
    max_inflight_small_embed_chars: int = Field(
        1_000_000, ge=1, description="embedding: characters of the small Embed requests in flight at once"
    )
    # Fair scheduling (docs/limits.md): big work runs in pieces, so small requests get in between.
    search_chunk_work: int = Field(
        1 << 27,
        ge=1,
        description="coordinator: a Search is sent to the shards in chunks of queries of about this much work "
        "each (vectors scanned * dim), at most search_chunk_parallel at a time",
    )
    search_chunk_parallel: int = Field(2, ge=1, description="coordinator: chunks of one Search in flight at once")
    embed_chunk_chars: int = Field(
        32_768,
        ge=1,
        description="embedding: a batch is run in sub-batches of about this many characters, taking turns with "
        "other requests (fair queuing)",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config = os.environ.get("VECSHARD_CONFIG")
        if config:
            if not Path(config).is_file():
                raise ValueError(f"VECSHARD_CONFIG={config}: no such file")
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config))
        return tuple(sources)

    def grpc_options(self) -> list[tuple[str, int]]:
        return [
            ("grpc.max_send_message_length", self.max_message_bytes),
            ("grpc.max_receive_message_length", self.max_message_bytes),
        ]

    @property
    def token(self) -> str:
        """The internal token, from internal_token or internal_token_file ("" when neither is set)."""
        if self.internal_token:
            return self.internal_token
        if self.internal_token_file is not None:
            return Path(self.internal_token_file).read_text().strip()
        return ""

    @property
    def max_results(self) -> int:
        """Most (distance, id) pairs one Search may return: nq * k * 12 bytes must fit a message."""
        return (self.max_message_bytes - 64 * 1024) // 12
