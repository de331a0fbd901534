"""The orders API's own application context (see :mod:`common.context`): built by its
lifespan (orders.main), read by its routes through :data:`OrdersContextDep`."""

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends

from common.context import AppSlot
from orders.admission import SagaBacklog
from orders.settings import Settings


@dataclass(frozen=True, slots=True)
class OrdersContext:
    settings: Settings
    saga_backlog: SagaBacklog


ORDERS = AppSlot("orders", OrdersContext)
OrdersContextDep = Annotated[OrdersContext, Depends(ORDERS.dependency)]
