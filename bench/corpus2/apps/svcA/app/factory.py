import os

from flask import Flask

from .db import init_engine
from .views import bp


def create_app(config=None):
    app = Flask(__name__)
    app.config.update(
        DATABASE_URL=os.environ.get("DATABASE_URL", "sqlite:////data/inventory.db"),
        PAGE_SIZE=int(os.environ.get("PAGE_SIZE", "50")),
        JSON_SORT_KEYS=False,
    )
    if config:
        app.config.update(config)
    init_engine(app)
    app.register_blueprint(bp, url_prefix="/api/v1")
    return app
