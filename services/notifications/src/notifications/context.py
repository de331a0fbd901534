"""The notifications API's own application context (see :mod:`common.context`): built by its
lifespan (notifications.main), read by its routes through :data:`NotificationsContextDep`."""

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends

from common.context import AppSlot
from notifications.live import LiveHub
from notifications.secretbox import SecretBox
from notifications.settings import Settings


@dataclass(frozen=True, slots=True)
class NotificationsContext:
    settings: Settings
    secret_box: SecretBox
    live_hub: LiveHub
    """The process's one pub/sub connection, shared by every stream it serves."""


NOTIFICATIONS = AppSlot("notifications", NotificationsContext)
NotificationsContextDep = Annotated[NotificationsContext, Depends(NOTIFICATIONS.dependency)]
