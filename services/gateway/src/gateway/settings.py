"""Gateway settings: environment variables prefixed ``GATEWAY_``.

The gateway has no database and no Redis of its own; of the shared settings it uses the
serving ones (host, port, reuse_port, http.max_in_flight, log_level) and ``trusted_proxies``
(whose ``X-Forwarded-For`` it believes: the ingress controller's, none by default).
Groups read their fields from ``GATEWAY_<GROUP>_<FIELD>`` (see common.settings):
``settings.breaker.failures`` is ``GATEWAY_BREAKER_FAILURES``.
"""

from pydantic import BaseModel, Field
from pydantic_settings import SettingsConfigDict

from common.settings import NESTED, HttpSettings, ServiceSettings


class GatewayHttpSettings(HttpSettings):
    """The shared serving limits (``GATEWAY_HTTP_*``), with the gateway's own default."""

    # Proxied requests are cheap to hold open (no database connection each); an SSE stream
    # holds one for its whole life. The services behind shed their own load.
    max_in_flight: int = Field(default=2048, ge=1, le=100_000)


class UpstreamSettings(BaseModel):
    """Connections to the services (``GATEWAY_UPSTREAM_*``)."""

    # Keep-alive connections per upstream (per gateway process), and how long an idle one is
    # kept: below the services' own keep-alive (30 s), so the gateway closes first and never
    # sends on a connection the service is closing.
    pool_size: int = Field(default=256, ge=1, le=10_000)
    keepalive_seconds: float = Field(default=15.0, gt=0)
    connect_timeout_seconds: float = Field(default=2.0, gt=0)


class RouteSettings(BaseModel):
    """Deadlines of proxied requests (``GATEWAY_ROUTE_*``)."""

    # The whole exchange (request body, response headers and body) must end within the
    # route's deadline; an event stream only until its headers. Per route prefix overrides,
    # JSON in the environment: GATEWAY_ROUTE_DEADLINES='{"/orders": 10}'.
    deadline_seconds: float = Field(default=15.0, gt=0)
    deadlines: dict[str, float] = Field(default_factory=dict)


class BreakerSettings(BaseModel):
    """Each upstream's circuit breaker (``GATEWAY_BREAKER_*``)."""

    # The breaker of one upstream opens after this many consecutive failures (no connection,
    # or no answer within the deadline) and refuses calls for breaker.open_seconds, then lets
    # one trial call through.
    failures: int = Field(default=5, ge=1)
    open_seconds: float = Field(default=5.0, gt=0)


class OverviewSettings(BaseModel):
    """GET /me/overview (``GATEWAY_OVERVIEW_*``)."""

    # GET /me/overview: each part has this long; a late part is null and named in `degraded`.
    part_deadline_seconds: float = Field(default=1.0, gt=0)
    orders: int = Field(default=5, ge=1, le=100)


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(**NESTED, env_prefix="GATEWAY_")

    service_name: str = "gateway"
    port: int = 8000
    http: GatewayHttpSettings = GatewayHttpSettings()

    users_url: str = "http://127.0.0.1:8001"
    orders_url: str = "http://127.0.0.1:8002"
    notifications_url: str = "http://127.0.0.1:8003"

    upstream: UpstreamSettings = UpstreamSettings()
    route: RouteSettings = RouteSettings()
    breaker: BreakerSettings = BreakerSettings()
    overview: OverviewSettings = OverviewSettings()
    # The merged /openapi.json is rebuilt at most this often (each service's document is
    # fetched again); a service that does not answer is left out until the next build.
    openapi_cache_seconds: float = Field(default=30.0, ge=0)
