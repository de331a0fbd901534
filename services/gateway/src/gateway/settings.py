"""Gateway settings: environment variables prefixed ``GATEWAY_``.

The gateway has no database and no Redis of its own; of the shared settings it uses the
serving ones (host, port, reuse_port, http_max_in_flight, log_level) and ``trusted_proxies``
(whose ``X-Forwarded-For`` it believes: the ingress controller's, none by default).
"""

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from common.settings import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWAY_", env_file=".env", extra="ignore")

    service_name: str = "gateway"
    port: int = 8000
    # Proxied requests are cheap to hold open (no database connection each); an SSE stream
    # holds one for its whole life. The services behind shed their own load.
    http_max_in_flight: int = Field(default=2048, ge=1, le=100_000)

    users_url: str = "http://127.0.0.1:8001"
    orders_url: str = "http://127.0.0.1:8002"
    notifications_url: str = "http://127.0.0.1:8003"

    # Keep-alive connections per upstream (per gateway process), and how long an idle one is
    # kept: below the services' own keep-alive (30 s), so the gateway closes first and never
    # sends on a connection the service is closing.
    upstream_pool_size: int = Field(default=256, ge=1, le=10_000)
    upstream_keepalive_seconds: float = Field(default=15.0, gt=0)
    upstream_connect_timeout_seconds: float = Field(default=2.0, gt=0)
    # The whole exchange (request body, response headers and body) must end within the
    # route's deadline; an event stream only until its headers. Per route prefix overrides,
    # JSON in the environment: GATEWAY_ROUTE_DEADLINES='{"/orders": 10}'.
    route_deadline_seconds: float = Field(default=15.0, gt=0)
    route_deadlines: dict[str, float] = Field(default_factory=dict)
    # The breaker of one upstream opens after this many consecutive failures (no connection,
    # or no answer within the deadline) and refuses calls for breaker_open_seconds, then lets
    # one trial call through.
    breaker_failures: int = Field(default=5, ge=1)
    breaker_open_seconds: float = Field(default=5.0, gt=0)

    # GET /me/overview: each part has this long; a late part is null and named in `degraded`.
    overview_part_deadline_seconds: float = Field(default=1.0, gt=0)
    overview_orders: int = Field(default=5, ge=1, le=100)
    # The merged /openapi.json is rebuilt at most this often (each service's document is
    # fetched again); a service that does not answer is left out until the next build.
    openapi_cache_seconds: float = Field(default=30.0, ge=0)
