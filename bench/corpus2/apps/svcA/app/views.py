from flask import Blueprint, abort, current_app, jsonify, request
from sqlalchemy import select

from .db import Session
from .models import Item, Site
from .validate import ValidationError, parse_item

bp = Blueprint("api", __name__)


@bp.errorhandler(ValidationError)
def _bad_request(exc):
    return jsonify(error=str(exc)), 400


@bp.get("/health")
def health():
    return jsonify(status="ok")


@bp.get("/sites/<int:site_id>/items")
def list_items(site_id):
    page = max(int(request.args.get("page", "1")), 1)
    size = current_app.config["PAGE_SIZE"]
    with Session() as s:
        if s.get(Site, site_id) is None:
            abort(404)
        rows = s.scalars(select(Item).where(Item.site_id == site_id)
                         .order_by(Item.sku).offset((page - 1) * size).limit(size))
        return jsonify(items=[r.to_dict() for r in rows], page=page)


@bp.post("/sites/<int:site_id>/items")
def add_item(site_id):
    data = parse_item(request.get_json(silent=True))
    with Session.begin() as s:
        if s.get(Site, site_id) is None:
            abort(404)
        item = Item(site_id=site_id, **data)
        s.add(item)
        s.flush()
        return jsonify(item.to_dict()), 201


@bp.patch("/items/<int:item_id>")
def adjust(item_id):
    delta = int((request.get_json(silent=True) or {}).get("delta", 0))
    with Session.begin() as s:
        item = s.get(Item, item_id)
        if item is None:
            abort(404)
        item.quantity += delta
        return jsonify(item.to_dict())
