"""A minimal API process for ``test_serving``: common.serving.run on a one-route app.

Run as a script with the port as its argument.
"""

import gc
import sys

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from common import serving


async def hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse("hello")


async def frozen(request: Request) -> PlainTextResponse:
    """How many objects the garbage collector no longer walks (serving.freeze_startup_heap)."""
    return PlainTextResponse(str(gc.get_freeze_count()))


def app() -> Starlette:
    return Starlette(routes=[Route("/", hello), Route("/frozen", frozen)])


if __name__ == "__main__":
    serving.run(
        "serving_app:app", factory=True, port=int(sys.argv[1]), log_config=None, access_log=False
    )
