"""``/docs`` that renders offline: Swagger UI served from the installed package, no CDN.

FastAPI's default docs page loads Swagger UI's script and stylesheet from a CDN, so on a
machine without internet it is blank. The same files ship in the ``swagger-ui-py`` wheel
(Swagger UI 5, which reads OpenAPI 3.1; its LICENSE, Apache-2.0, sits beside them), and are
served here under ``/docs/assets``.
"""

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS_DIR = Path(str(files("swagger_ui") / "static"))
ASSETS_PATH = "/docs/assets"


def install_docs(app: FastAPI, *, openapi_url: str | None = None) -> None:
    """Serve ``/docs`` (Swagger UI on ``openapi_url``, the app's own by default) and its
    assets. The app is made with ``docs_url=None``, so FastAPI's CDN page is not there."""
    document_url = openapi_url or app.openapi_url or "/openapi.json"
    title = f"{app.title} - API"

    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=document_url,
            title=title,
            swagger_js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_PATH}/favicon-32x32.png",
        )

    app.add_api_route("/docs", docs, methods=["GET"], include_in_schema=False)
    app.mount(ASSETS_PATH, StaticFiles(directory=ASSETS_DIR), name="docs-assets")
