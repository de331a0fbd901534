"""The operator console: server-rendered HTML pages over the same admin_service as the API.

No JavaScript build step, and no JavaScript needed: every page is plain links, forms and
buttons (Jinja2 templates in ``templates/admin/``), so it works from the keyboard and with
a screen reader. Changes are POSTed forms carrying a CSRF token, answered with a redirect to
the page that shows the outcome (its audit entry), so a reload never repeats an action.

Pages: ``/admin/`` (sagas, with filters), ``/admin/ui/sagas/{id}`` (timeline, drawn as an
inline SVG, with retry and compensate), ``/admin/ui/dead-letters`` (list, inspect, redrive
one or all matching a filter), ``/admin/ui/audit``; ``/admin/login`` takes an operator token
and starts a console session (a random id in an HttpOnly, SameSite=Strict cookie and in Redis
with a TTL; see ``admin_auth``).
"""

import logging
import pathlib
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from common.contracts import SagaState, StepStatus
from common.errors import NotFound
from common.http import DatabaseDep, RedisDep
from common.ratelimit import AUTH_LIMIT, READ_LIMIT, WRITE_LIMIT
from orders import admin_service
from orders.admin_auth import (
    CSRF_FIELD,
    OPERATOR_COOKIE,
    ConsoleOperator,
    Forbidden,
    check_csrf,
    end_console_session,
    find_operator,
    safe_next,
    same_origin,
    start_console_session,
)
from orders.admin_schemas import Operator, RedriveFilter, RedriveRequest, SagaTimeline
from orders.context import ORDERS
from orders.saga import OrderStatus
from orders.settings import Settings

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/admin", include_in_schema=False)
templates = Jinja2Templates(directory=pathlib.Path(__file__).parent / "templates" / "admin")

SAGA_STATES = tuple(SagaState)  # the saga's own enums, as the check constraints are
ORDER_STATUSES = tuple(OrderStatus)
FILTER_VALUE = re.compile(r"[A-Za-z0-9_.:-]{1,100}")
CsrfToken = Annotated[str, Form(alias=CSRF_FIELD, max_length=128)]
PageCursor = Annotated[str, Query(max_length=200)]


def _settings(request: Request) -> Settings:
    return ORDERS.of(request.app).settings


def _render(
    request: Request,
    template: str,
    operator: Operator | None,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    return templates.TemplateResponse(
        request,
        template,
        {"operator": operator, "csrf_field": CSRF_FIELD, **context},
        status_code=status_code,
        headers={
            "Cache-Control": "no-store",
            "Content-Security-Policy": (
                "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
                "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
            ),
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "same-origin",
        },
    )


def _see(path: str, **query: str) -> RedirectResponse:
    suffix = f"?{urlencode(query)}" if query else ""
    return RedirectResponse(path + suffix, status_code=303)


@dataclass
class Filters:
    """A filter form's values: blank fields are no filter; bad ones are reported, not used."""

    values: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def choice(self, name: str, raw: str, allowed: tuple[str, ...]) -> str | None:
        self.values[name] = raw
        if not raw:
            return None
        if raw not in allowed:
            self.errors.append(f"{name}: not one of {', '.join(allowed)}")
            return None
        return raw

    def word(self, name: str, raw: str) -> str | None:
        self.values[name] = raw
        if not raw:
            return None
        if FILTER_VALUE.fullmatch(raw) is None:
            self.errors.append(f"{name}: letters, digits and _ . : - only")
            return None
        return raw

    def seconds(self, name: str, raw: str) -> int | None:
        self.values[name] = raw
        if not raw:
            return None
        if not (raw.isascii() and raw.isdigit() and len(raw) <= 9) or int(raw) > 10 * 365 * 86400:
            self.errors.append(f"{name}: a whole number of seconds")
            return None
        return int(raw)


async def _flash(request: Request, db: DatabaseDep, audit: str) -> Any:
    """The audit entry named by ``?audit=``: the outcome of the action just done."""
    try:
        audit_id = uuid.UUID(audit)
    except ValueError:
        return None
    async with db.session() as session:
        return await admin_service.get_audit_entry(session, audit_id)


# -- sign in and out ------------------------------------------------------------------------


@router.get("/login", response_class=HTMLResponse)
async def login_page(request: Request, next: PageCursor = "/admin/") -> HTMLResponse:
    return _render(request, "login.html", None, next=safe_next(next), error=None)


@router.post("/login", response_class=HTMLResponse, dependencies=[AUTH_LIMIT])
async def login(
    request: Request,
    db: DatabaseDep,
    redis: RedisDep,
    token: Annotated[str, Form(max_length=512)] = "",
    next: Annotated[str, Form(max_length=200)] = "/admin/",
) -> Response:
    """A console session for an operator token: a random id in the cookie and in Redis (with
    a TTL), never the token itself. A refused sign-in is audited."""
    settings = _settings(request)
    operator = find_operator(token.strip(), settings.operator_hashes()) if token.strip() else None
    if operator is None or not same_origin(request):
        reason = "cross-site form" if operator is not None else "not an operator token"
        logger.warning("operator sign-in refused", extra={"path": request.url.path})
        async with db.transaction() as uow:
            await admin_service.record_failed_sign_in(uow, reason)
        return _render(
            request,
            "login.html",
            None,
            status_code=401,
            next=safe_next(next),
            error="That is not an operator token.",
        )
    session_id = await start_console_session(
        redis, operator, settings.operator.cookie_max_age_seconds
    )
    async with db.transaction() as uow:
        await admin_service.record_session(uow, operator, "console.login")
    response = _see(safe_next(next))
    response.set_cookie(
        OPERATOR_COOKIE,
        session_id,
        max_age=settings.operator.cookie_max_age_seconds,
        path="/admin",
        httponly=True,
        samesite="strict",
        secure=settings.operator.cookie_secure,
    )
    return response


@router.post("/logout", dependencies=[WRITE_LIMIT])
async def logout(
    request: Request,
    operator: ConsoleOperator,
    db: DatabaseDep,
    redis: RedisDep,
    csrf: CsrfToken = "",
) -> RedirectResponse:
    """The console session ends server-side: its cookie, replayed, signs nobody in."""
    check_csrf(request, operator, csrf)
    session_id = request.cookies.get(OPERATOR_COOKIE)
    if session_id:
        await end_console_session(redis, session_id)
    async with db.transaction() as uow:
        await admin_service.record_session(uow, operator, "console.logout")
    response = _see("/admin/login")
    response.delete_cookie(OPERATOR_COOKIE, path="/admin", httponly=True, samesite="strict")
    return response


# -- sagas ----------------------------------------------------------------------------------


@router.get("/", response_class=HTMLResponse, dependencies=[READ_LIMIT])
async def sagas_page(
    request: Request,
    operator: ConsoleOperator,
    db: DatabaseDep,
    state: PageCursor = "",
    status: PageCursor = "",
    reason: PageCursor = "",
    older_than_seconds: PageCursor = "",
    overdue: PageCursor = "",
    cursor: PageCursor = "",
) -> HTMLResponse:
    filters = Filters()
    filters.values["overdue"] = "1" if overdue else ""
    async with db.session() as session:
        page = await admin_service.list_sagas(
            session,
            state=filters.choice("state", state, SAGA_STATES),
            order_status=filters.choice("status", status, ORDER_STATUSES),
            reason=filters.word("reason", reason),
            older_than_seconds=filters.seconds("older_than_seconds", older_than_seconds),
            overdue=bool(overdue),
            limit=25,
            cursor=cursor or None,
        )
    next_query = {k: v for k, v in filters.values.items() if v}
    return _render(
        request,
        "sagas.html",
        operator,
        section="sagas",
        page=page,
        filters=filters,
        states=SAGA_STATES,
        statuses=ORDER_STATUSES,
        next_url=(f"/admin/?{urlencode({**next_query, 'cursor': page.next_cursor})}")
        if page.next_cursor
        else None,
        now=datetime.now(UTC),
    )


@router.get("/ui/sagas/{order_id}", response_class=HTMLResponse, dependencies=[READ_LIMIT])
async def saga_page(
    request: Request,
    order_id: uuid.UUID,
    operator: ConsoleOperator,
    db: DatabaseDep,
    audit: PageCursor = "",
) -> HTMLResponse:
    async with db.session() as session:
        timeline = await admin_service.saga_timeline(session, order_id)
    return _render(
        request,
        "saga.html",
        operator,
        section="sagas",
        saga=timeline,
        picture=timeline_picture(timeline, datetime.now(UTC)),
        flash=await _flash(request, db, audit) if audit else None,
    )


@router.post("/ui/sagas/{order_id}/{action}", dependencies=[WRITE_LIMIT])
async def saga_action(
    request: Request,
    order_id: uuid.UUID,
    action: str,
    operator: ConsoleOperator,
    db: DatabaseDep,
    csrf: CsrfToken = "",
) -> RedirectResponse:
    check_csrf(request, operator, csrf)
    if action not in ("retry", "compensate"):
        raise NotFound(f"No saga action {action!r}.")
    async with db.transaction() as uow:
        if action == "retry":
            outcome = await admin_service.retry_saga(uow, _settings(request), operator, order_id)
        else:
            outcome = await admin_service.compensate_saga(
                uow, _settings(request), operator, order_id
            )
    return _see(f"/admin/ui/sagas/{order_id}", audit=str(outcome.audit_id))


# -- dead letters ---------------------------------------------------------------------------


@router.get("/ui/dead-letters", response_class=HTMLResponse, dependencies=[READ_LIMIT])
async def dead_letters_page(
    request: Request,
    operator: ConsoleOperator,
    db: DatabaseDep,
    redis: RedisDep,
    type: PageCursor = "",
    cursor: PageCursor = "",
    audit: PageCursor = "",
) -> HTMLResponse:
    filters = Filters()
    where = RedriveFilter(type=filters.word("type", type))
    page = await admin_service.list_dead_letters(
        redis, _settings(request), where=where, limit=25, cursor=cursor or None
    )
    held = await admin_service.list_held_messages(redis, _settings(request))
    next_query = {k: v for k, v in filters.values.items() if v}
    return _render(
        request,
        "dead_letters.html",
        operator,
        section="dead_letters",
        page=page,
        held=held,
        filters=filters,
        next_url=f"/admin/ui/dead-letters?{urlencode({**next_query, 'cursor': page.next_cursor})}"
        if page.next_cursor
        else None,
        flash=await _flash(request, db, audit) if audit else None,
    )


@router.get(
    "/ui/dead-letters/{dead_letter_id}", response_class=HTMLResponse, dependencies=[READ_LIMIT]
)
async def dead_letter_page(
    request: Request,
    operator: ConsoleOperator,
    redis: RedisDep,
    dead_letter_id: Annotated[str, Path(pattern=r"^[0-9]{1,20}-[0-9]{1,20}$")],
) -> HTMLResponse:
    letter = await admin_service.get_dead_letter_detail(redis, _settings(request), dead_letter_id)
    return _render(request, "dead_letter.html", operator, section="dead_letters", letter=letter)


@router.post("/ui/dead-letters/redrive", dependencies=[WRITE_LIMIT])
async def redrive_form(
    request: Request,
    operator: ConsoleOperator,
    db: DatabaseDep,
    redis: RedisDep,
    csrf: CsrfToken = "",
    dead_letter_id: Annotated[str, Form(alias="id", max_length=64)] = "",
    type: Annotated[str, Form(max_length=100)] = "",
) -> RedirectResponse:
    """One letter (``id``) or every letter matching the filter (``type``, blank: all)."""
    check_csrf(request, operator, csrf)
    filters = Filters()
    if dead_letter_id:
        body = RedriveRequest(ids=[dead_letter_id]) if _is_entry_id(dead_letter_id) else None
    else:
        wanted = filters.word("type", type)
        body = None if filters.errors else RedriveRequest(filter=RedriveFilter(type=wanted))
    if body is None:
        raise Forbidden("The redrive form was not filled in as the console sends it.")
    async with db.transaction() as uow:
        result = await admin_service.redrive(uow, redis, _settings(request), operator, body)
    back = {"audit": str(result.audit_id)}
    if type and not dead_letter_id:
        back["type"] = type
    return _see("/admin/ui/dead-letters", **back)


def _is_entry_id(value: str) -> bool:
    return admin_service.is_entry_id(value)


# -- audit ----------------------------------------------------------------------------------


@router.get("/ui/audit", response_class=HTMLResponse, dependencies=[READ_LIMIT])
async def audit_page(
    request: Request, operator: ConsoleOperator, db: DatabaseDep, cursor: PageCursor = ""
) -> HTMLResponse:
    async with db.session() as session:
        page = await admin_service.list_audit(session, limit=50, cursor=cursor or None)
    return _render(
        request,
        "audit.html",
        operator,
        section="audit",
        page=page,
        next_url=f"/admin/ui/audit?{urlencode({'cursor': page.next_cursor})}"
        if page.next_cursor
        else None,
    )


# -- the database's partitions ---------------------------------------------------------------


@router.get("/ui/database", response_class=HTMLResponse, dependencies=[READ_LIMIT])
async def database_page(
    request: Request, operator: ConsoleOperator, db: DatabaseDep
) -> HTMLResponse:
    async with db.session() as session:
        tables = await admin_service.partition_status(session)
    return _render(request, "database.html", operator, section="database", tables=tables)


# -- the timeline as a picture --------------------------------------------------------------


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    kind: str  # css class: step, resend, late_reply, operator, failed
    label: str  # the accessible title: what happened and when


@dataclass(frozen=True)
class Picture:
    """Where the template draws each step: one lane per step name, time left to right."""

    width: int
    height: int
    left: int
    right: int
    lanes: list[tuple[str, float]]
    points: list[Point]
    ticks: list[tuple[float, str]]
    deadline_x: float | None
    now_x: float | None
    description: str


LANE_HEIGHT = 34
TOP = 24
LEFT = 130
WIDTH = 760
RIGHT = WIDTH - 40
FAILED_STATUSES = frozenset({StepStatus.FAILED, StepStatus.TIMED_OUT, StepStatus.COMPENSATED})


def _seconds_label(seconds: float) -> str:
    if seconds < 1:
        return f"+{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"+{seconds:.1f} s"
    if seconds < 7200:
        return f"+{seconds / 60:.1f} min"
    return f"+{seconds / 3600:.1f} h"


def _point_kind(status: str, detail: str | None, kind: str) -> str:
    """The colour of a step: the operator's hand first, then failures, then its kind."""
    if detail == "operator":
        return "operator"
    return "failed" if status in FAILED_STATUSES else kind


def timeline_picture(saga: SagaTimeline, now: datetime) -> Picture:
    """The saga's steps over time: x is time since the saga began, y the step's lane.

    The span reaches the deadline (dashed line) and, while the saga still waits, now.
    """
    start = min([saga.created_at, *(step.at for step in saga.steps)])
    moments = [step.at for step in saga.steps]
    if saga.deadline_at is not None:
        moments.append(saga.deadline_at)
    if saga.state != SagaState.SETTLED:
        moments.append(now)
    span = max((max(moments, default=start) - start).total_seconds(), 0.001)

    def x_of(moment: datetime) -> float:
        return round(LEFT + (RIGHT - LEFT) * (moment - start).total_seconds() / span, 1)

    lanes: dict[str, float] = {}
    for step in saga.steps:
        lanes.setdefault(step.name, TOP + LANE_HEIGHT * len(lanes) + LANE_HEIGHT / 2)
    points = [
        Point(
            x=x_of(step.at),
            y=lanes[step.name],
            kind=_point_kind(step.status, step.detail, step.kind),
            label=(
                f"{step.name} {step.status}{f' ({step.detail})' if step.detail else ''} "
                f"at {step.at.isoformat(timespec='milliseconds')}, "
                f"{_seconds_label((step.at - start).total_seconds())}"
            ),
        )
        for step in saga.steps
    ]
    height = TOP + LANE_HEIGHT * max(len(lanes), 1) + 30
    ticks = [(LEFT + (RIGHT - LEFT) * i / 4, _seconds_label(span * i / 4)) for i in range(5)]
    return Picture(
        width=WIDTH,
        height=height,
        left=LEFT,
        right=RIGHT,
        lanes=list(lanes.items()),
        points=points,
        ticks=ticks,
        deadline_x=x_of(saga.deadline_at) if saga.deadline_at is not None else None,
        now_x=x_of(now) if saga.state != SagaState.SETTLED else None,
        description=(
            f"{len(saga.steps)} steps over {_seconds_label(span)[1:]} in {len(lanes)} lanes"
            + (f"; {saga.resends} re-sends" if saga.resends else "")
            + (f"; {saga.late_replies} late replies" if saga.late_replies else "")
        ),
    )
