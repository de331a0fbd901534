"""The users API's own application context (see :mod:`common.context`): built by its
lifespan (users.main), read by its routes through :data:`UsersContextDep`."""

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends

from common.context import AppSlot
from users.cache import UserCache
from users.passwords import Passwords
from users.settings import Settings


@dataclass(frozen=True, slots=True)
class UsersContext:
    settings: Settings
    passwords: Passwords
    user_cache: UserCache


USERS = AppSlot("users", UsersContext)
UsersContextDep = Annotated[UsersContext, Depends(USERS.dependency)]
