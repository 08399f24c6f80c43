"""Pages a person opens in a browser: Swagger UI and the approvers' review page.

Everything they load is served from here, so both work with no network access.
"""

from __future__ import annotations

from pathlib import Path

import flask_swagger_ui
from flask import Blueprint, Flask, redirect, render_template, send_from_directory, url_for

SWAGGER_DIST = Path(flask_swagger_ui.__file__).parent / "dist"
STATIC = Path(__file__).parent / "static"

# Swagger UI settings; the page takes them as JSON, so only data goes here.
SWAGGER_UI_CONFIG = {
    "url": "/api/openapi.json",
    "dom_id": "#swagger-ui",
    "persistAuthorization": True,
    "displayRequestDuration": True,
    "deepLinking": True,
    "docExpansion": "list",
    "defaultModelsExpandDepth": 0,
    "filter": True,
    "tryItOutEnabled": True,
    "validatorUrl": None,
}


def register_pages(app: Flask) -> None:
    pages = Blueprint(
        "pages",
        __name__,
        template_folder="templates",
        static_folder="static",
        static_url_path="/static",
    )

    @pages.get("/")
    def index():
        return redirect(url_for("pages.swagger_ui"))

    @pages.get("/api/docs")
    def swagger_ui():
        return render_template("web/swagger_ui.html", config=SWAGGER_UI_CONFIG)

    @pages.get("/api/docs/assets/<path:filename>")
    def swagger_assets(filename: str):
        return send_from_directory(SWAGGER_DIST, filename, max_age=86400)

    @pages.get("/review")
    def review():
        return render_template("web/review.html")

    @pages.get("/favicon.ico")
    def favicon():
        return send_from_directory(STATIC, "favicon.svg", mimetype="image/svg+xml")

    app.register_blueprint(pages)
