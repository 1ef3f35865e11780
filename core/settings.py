"""All of Parley's settings, read from ``PARLEY_*`` environment variables.

Nested sections use ``__``: ``PARLEY_DB__URL``, ``PARLEY_QUEUE__WORKERS``,
``PARLEY_LIMITS__MAX_UPLOAD_BYTES``. Built by ``get_settings()``, never at import.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class DbSettings(BaseModel):
    url: str | None = Field(
        default=None,
        description="SQLAlchemy URL; default: SQLite file parley.db in the data directory",
    )
    echo: bool = False


class StorageSettings(BaseModel):
    url: str | None = Field(
        default=None,
        description="where artifacts, dataset images and uploads live: a folder (or "
        "`file:///path`), or `s3://bucket/prefix` for S3-compatible object storage (MinIO, AWS); "
        "default: artifacts/ in the data directory",
    )
    endpoint_url: str | None = Field(
        default=None,
        description="the S3 endpoint for `s3://` URLs (MinIO: `http://minio:9000`); default: "
        "AWS. Credentials come from the usual AWS variables (AWS_ACCESS_KEY_ID, ...)",
    )
    region: str | None = Field(default=None, description="the S3 region (AWS_DEFAULT_REGION)")
    timeout_s: float = Field(
        default=10.0, gt=0, description="seconds an object-store call may take before it fails"
    )


class RedisSettings(BaseModel):
    """Redis, for a deployment of several gateways and workers. Without a URL everything that
    would live there stays in process (one gateway)."""

    url: str | None = Field(
        default=None,
        description="redis://host:port/db: the Celery broker and result backend, and the "
        "gateways' conversation locks, live fan-out, cache invalidation, login lockouts, "
        "rate-limit counters and de-duplication of provider redeliveries",
    )
    lock_lease_s: float = Field(
        default=30.0,
        gt=0,
        description="seconds a conversation lock lives without renewal: a dead gateway's lock "
        "expires after this",
    )
    lock_wait_s: float = Field(
        default=60.0, gt=0, description="seconds a message waits for its conversation's lock"
    )
    socket_timeout_s: float = Field(
        default=2.0, gt=0, description="seconds a Redis call may take before Redis counts as down"
    )


class QueueSettings(BaseModel):
    backend: str = Field(
        default="local",
        description="train queue: `local` (worker processes started by the server, the "
        "database is the queue) or `celery` (Celery workers on PARLEY_REDIS__URL, started with "
        "`parley worker`)",
    )
    workers: int = Field(
        default=1,
        ge=0,
        description="local worker processes started by serve (0: this server trains nothing)",
    )
    workers_elsewhere: bool = Field(
        default=False,
        description="set by `parley serve --processes N` in the gateways without workers: "
        "another gateway's local workers run their jobs (no `queue.no_workers` log)",
    )
    gpu_wait_s: float = Field(
        default=0.0,
        ge=0,
        description="celery: seconds a job that prefers a GPU waits for a `gpu` worker before "
        "`cpu` workers may run it (0: at once)",
    )
    visibility_timeout_s: float = Field(
        default=6 * 3600.0,
        gt=0,
        description="celery: seconds before an unacknowledged job message is delivered again; "
        "longer than the longest job (a dead worker's job is re-queued sooner, by its heartbeat)",
    )
    poll_interval: float = Field(default=0.2, gt=0)
    sweep_interval_s: float = Field(
        default=5.0,
        gt=0,
        description="celery: seconds between the sweeps (in every gateway and worker) that "
        "re-queue a dead worker's job and send queued jobs that have no message",
    )
    max_attempts: int = Field(default=2, ge=1, description="runs of a job interrupted by a crash")
    threads: int = Field(default=0, ge=0, description="threads per worker; 0 = all cores")
    recycle_idle_s: float = Field(
        default=300.0,
        ge=0,
        description="a local train worker that imported PyTorch for a job exits after this many "
        "seconds without one, and `parley serve` starts a fresh one (PyTorch, ~470 MB, is "
        "released); 0: never",
    )
    heartbeat_interval: float = Field(default=5.0, gt=0, description="seconds between beats")
    stale_after: float = Field(
        default=60.0, gt=0, description="a running job without a heartbeat this long is re-queued"
    )
    per_tenant_concurrency: int = Field(
        default=1,
        ge=1,
        description="jobs of one tenant that run at once; the queue takes "
        "tenants in turn (round-robin), so one tenant's backlog never holds another's job",
    )


class LimitSettings(BaseModel):
    max_upload_bytes: int = 50 * 1024 * 1024
    sync_import_bytes: int = 2 * 1024 * 1024
    max_examples: int = 200_000
    max_labels: int = 1_000
    max_text_chars: int = 2_000
    max_batch_texts: int = 64
    max_image_pixels: int = Field(
        default=40_000_000, ge=1, description="pixels an image may have; checked before decoding"
    )
    max_batch_images: int = Field(default=16, ge=1, description="images per predict call")
    max_image_bytes: int = Field(
        default=20 * 1024 * 1024, ge=1, description="bytes of one image in a predict call"
    )
    max_json_bytes: int = Field(
        default=1024 * 1024, ge=1, description="bytes of a JSON (or YAML/text) request body"
    )
    max_webhook_bytes: int = Field(
        default=1024 * 1024, ge=1, description="bytes of a channel provider's webhook body"
    )
    max_document_depth: int = Field(
        default=32, ge=2, description="nesting depth of a parsed JSON/YAML document"
    )
    max_document_nodes: int = Field(
        default=200_000, ge=1, description="values (after YAML alias expansion) in a document"
    )
    max_yaml_aliases: int = Field(
        default=100, ge=0, description="alias uses (*name) a YAML document may hold"
    )


class ServingSettings(BaseModel):
    model_cache_size: int = Field(
        default=10_000, ge=1, description="models kept loaded at most (LRU)"
    )
    model_cache_bytes: int = Field(
        default=1024**3, ge=1, description="memory budget of loaded models (LRU eviction)"
    )
    max_batch: int = Field(
        default=64, ge=1, description="texts encoded together at most; 1 turns batching off"
    )
    batch_wait_ms: float = Field(
        default=1.0, ge=0, le=100, description="how long a batch waits for more requests"
    )
    processes: int = Field(
        default=1,
        ge=1,
        description="gateway processes `parley serve` runs on its port (each with its own model "
        "cache; the train workers and the demo are set up once)",
    )
    inference_threads: int = Field(
        default=0,
        ge=0,
        description="threads of a gateway process that run inference batches (ONNX Runtime "
        "releases the GIL, so each keeps a core busy); 0: the cores shared out among the "
        "gateway processes (one a core with one process)",
    )
    torch_threads: int = Field(default=1, ge=1)
    ocr_threads: int = Field(
        default=0,
        ge=0,
        description="threads one OCR read uses (RapidOCR's ONNX Runtime sessions, and `auto`'s "
        "second reader); 0: as many as the inference threads (the cores shared out among the "
        "gateway processes)",
    )
    device: str = Field(default="auto", description="auto, cpu or cuda")
    lookup_ttl: float = Field(
        default=1.0,
        ge=0,
        description="seconds between polls of the look-up change log: a key revoked or an "
        "alias moved through another gateway process is seen here within this time (with "
        "PARLEY_REDIS__URL changes arrive at once over pub/sub instead); 0 turns the key and "
        "model look-up caches off",
    )
    export_builds: int = Field(
        default=1,
        ge=1,
        le=16,
        description="model exports (GET /v1/models/{id}/export) a gateway process builds at "
        "once; another is 429 with Retry-After (an export already built is sent at once)",
    )
    export_cache_bytes: int = Field(
        default=2 * 1024**3,
        ge=0,
        description="disk the built exports keep in the cache folder (exports/) at most; the "
        "least recently downloaded go first",
    )


class Rate(BaseModel):
    """A token bucket: ``per_second`` tokens refill, up to ``burst`` held at once."""

    per_second: float = Field(gt=0)
    burst: int = Field(ge=1)


class RateLimitSettings(BaseModel):
    """Request rates per API key and per tenant, by class of route (``bot_gateway.ratelimit``:
    predict = predict/parse/OCR, train, upload = datasets and chat uploads, webhook = channel
    webhooks, api = everything else); ``429`` past them. Operators override them per tenant
    (``parley tenants update T --rate predict_tenant=50/100``)."""

    enabled: bool = True
    backend: str = Field(
        default="auto",
        description="counter store: memory (one process), redis (shared by all gateways; "
        "needs PARLEY_REDIS__URL), or auto (redis when PARLEY_REDIS__URL is set)",
    )
    predict_key: Rate = Rate(per_second=200, burst=400)
    predict_tenant: Rate = Rate(per_second=400, burst=800)
    train_key: Rate = Rate(per_second=2, burst=20)
    train_tenant: Rate = Rate(per_second=4, burst=40)
    upload_key: Rate = Rate(per_second=10, burst=50)
    upload_tenant: Rate = Rate(per_second=20, burst=100)
    webhook_tenant: Rate = Rate(per_second=50, burst=200)
    api_key: Rate = Rate(per_second=100, burst=300)
    api_tenant: Rate = Rate(per_second=200, burst=600)
    auth_failures_per_address: Rate = Rate(per_second=0.5, burst=20)


class AuditSettings(BaseModel):
    retention_days: int = Field(default=90, ge=1, description="days audit entries are kept")


class OutboundSettings(BaseModel):
    """Calls Parley makes for tenants (HTTP actions, action servers, image URLs)."""

    allow_hosts: list[str] = Field(
        default_factory=list,
        description="private or loopback hosts/networks outbound calls may reach "
        "(`10.0.0.5`, `10.0.0.0/8`, `orders.internal`); everything private is refused otherwise",
    )


class RemoteModelSettings(BaseModel):
    """Models that run on a tenant's own server (``POST /v1/models/remote``, Open Inference
    Protocol / KServe V2). Their calls obey ``PARLEY_OUTBOUND__ALLOW_HOSTS`` too."""

    timeout_s: float = Field(
        default=5.0,
        gt=0,
        le=120,
        description="seconds a call to a remote model server may take (waiting for a free "
        "slot included) before it fails with 502 remote_model_failed",
    )
    per_tenant_concurrency: int = Field(
        default=8,
        ge=1,
        description="calls to remote model servers one tenant has in flight at once per "
        "gateway process; more wait, so one tenant's slow server cannot hold the others' calls",
    )


class MlflowSettings(BaseModel):
    """Logging every train job to an MLflow tracking server (``training.tracking``): off
    unless ``tracking_uri`` is set; needs the ``mlflow`` extra (``pip install parley[mlflow]``)."""

    tracking_uri: str | None = Field(
        default=None,
        description="MLflow tracking URI (`http://mlflow:5000`, `sqlite:///mlflow.db`, "
        "`databricks`); unset: nothing is logged",
    )
    experiment: str = Field(
        default="parley/{tenant}",
        min_length=1,
        description="experiment each run goes to; `{tenant}` is replaced by the tenant's name, "
        "`{tenant_id}` by its id",
    )
    timeout_s: float = Field(
        default=15.0,
        gt=0,
        le=300,
        description="seconds logging one finished job may take; past it the job goes on and "
        "an `mlflow.log_failed` event is logged",
    )


class ImageFetchSettings(BaseModel):
    """Prediction inputs given as URLs: off unless the operator turns them on."""

    enabled: bool = Field(default=False, description="allow `url`/`urls` in predict calls")
    allow_hosts: list[str] = Field(
        default_factory=list,
        description="hosts images may come from (exact, or `.example.com` for subdomains)",
    )
    timeout_s: float = Field(default=5.0, gt=0, le=60)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="PARLEY_", env_nested_delimiter="__", extra="ignore", populate_by_name=True
    )

    data_dir: Path = Path("./var")
    cache_path: Path | None = Field(
        default=None,
        alias="PARLEY_CACHE_DIR",
        description="derived files (the encoder's ONNX graph); default: cache/ in the data dir",
    )
    operator_token: SecretStr | None = None
    secret_key: SecretStr | None = Field(
        default=None,
        description="key that encrypts channel secrets and action-server tokens at rest; "
        "comma-separated to rotate: the first encrypts, the others still decrypt until "
        "`parley secrets rotate`",
    )
    public_url: str | None = Field(
        default=None,
        description="the server's public base URL (https://parley.example.com): channel webhook "
        "URLs are built on it; default: the URL a request came to",
    )
    demo: bool = Field(
        default=False, description="serve the demo's sample orders API (set by `parley serve`)"
    )
    log_level: str = "INFO"
    db: DbSettings = DbSettings()
    storage: StorageSettings = StorageSettings()
    redis: RedisSettings = RedisSettings()
    queue: QueueSettings = QueueSettings()
    limits: LimitSettings = LimitSettings()
    serving: ServingSettings = ServingSettings()
    image_fetch: ImageFetchSettings = ImageFetchSettings()
    rate_limits: RateLimitSettings = RateLimitSettings()
    audit: AuditSettings = AuditSettings()
    outbound: OutboundSettings = OutboundSettings()
    remote_models: RemoteModelSettings = RemoteModelSettings()
    mlflow: MlflowSettings = MlflowSettings()

    @property
    def database_url(self) -> str:
        return self.db.url or f"sqlite:///{(self.data_dir / 'parley.db').resolve()}"

    @property
    def cache_dir(self) -> Path:
        return self.cache_path or self.data_dir / "cache"

    @property
    def storage_url(self) -> str:
        """Where artifacts live: ``s3://bucket/prefix``, or a local folder (resolved)."""
        url = self.storage.url
        if url and url.startswith("s3://"):
            return url
        if url and url.startswith("file://"):
            url = url[len("file://") :]
        return str(Path(url).resolve() if url else (self.data_dir / "artifacts").resolve())

    @property
    def artifacts_dir(self) -> Path:
        """The local artifact folder (embedded mode); with object storage, the local cache of
        downloaded artifacts."""
        if self.storage_url.startswith("s3://"):
            return self.cache_dir / "artifacts"
        return Path(self.storage_url)

    @property
    def counter_backend(self) -> str:
        """The rate-limit counter store in use (``rate_limits.backend``, ``auto`` resolved)."""
        backend = self.rate_limits.backend
        if backend == "auto":
            return "redis" if self.redis.url else "memory"
        return backend

    def worker_env(self) -> dict[str, str]:
        """The environment a worker subprocess needs to see the same database and files."""
        env = {
            "PARLEY_DATA_DIR": str(self.data_dir.resolve()),
            "PARLEY_DB__URL": self.database_url,
            "PARLEY_CACHE_DIR": str(self.cache_dir.resolve()),
            "PARLEY_STORAGE__URL": self.storage_url,
            "PARLEY_QUEUE__THREADS": str(self.queue.threads),
            "PARLEY_QUEUE__POLL_INTERVAL": str(self.queue.poll_interval),
            "PARLEY_QUEUE__PER_TENANT_CONCURRENCY": str(self.queue.per_tenant_concurrency),
            "PARLEY_QUEUE__RECYCLE_IDLE_S": str(self.queue.recycle_idle_s),
            "PARLEY_SERVING__DEVICE": self.serving.device,
            "PARLEY_LOG_LEVEL": self.log_level,
        }
        for name, value in (
            ("PARLEY_STORAGE__ENDPOINT_URL", self.storage.endpoint_url),
            ("PARLEY_STORAGE__REGION", self.storage.region),
            ("PARLEY_STORAGE__TIMEOUT_S", str(self.storage.timeout_s)),
            ("PARLEY_REDIS__URL", self.redis.url),
            ("PARLEY_MLFLOW__TRACKING_URI", self.mlflow.tracking_uri),
            ("PARLEY_MLFLOW__EXPERIMENT", self.mlflow.experiment),
            ("PARLEY_MLFLOW__TIMEOUT_S", str(self.mlflow.timeout_s)),
        ):
            if value:
                env[name] = value
        return env


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings (cached; tests call ``get_settings.cache_clear()``)."""
    return Settings()
