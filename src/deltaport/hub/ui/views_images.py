"""Images: the registered images, and one image's page.

An image's page shows how many devices have it, have it in transit or failed it (and
which, one page at a time), and the bundles built for it with their sizes next to
what a layer pull of the same image would send.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from deltaport.errors import DeltaportError
from deltaport.fleet import queries as fleet_queries
from deltaport.fleet.db import session_scope
from deltaport.fleet.states import ImageStatus
from deltaport.hub.deps import Hub
from deltaport.hub.ui import queries
from deltaport.hub.ui.web import CONFIG, PREFIX, Me, error_page, parse_page, render

router = APIRouter(prefix=PREFIX, include_in_schema=False)
STATUSES = [s.value for s in ImageStatus if s is not ImageStatus.ABSENT]


@router.get("/images")
def images_page(me: Me, hub: Hub, q: str = "", page: str = "1") -> HTMLResponse:
    """Registered images, newest first (search by name)."""
    with session_scope(hub.engine) as session:
        rows = queries.images(session, search=q, page=parse_page(page), size=CONFIG.page_size)
        images = [(img.name, img.image_id, sum(int(s) for s in img.layer_sizes), img.registered_at,
                   n) for img, n in rows.rows]
    return render("images.html", {"me": me, "nav": "images", "p": rows, "images": images,
                                  "q": q})


@router.get("/images/{reference:path}")
def image_page(reference: str, me: Me, hub: Hub, status: str = "",
               page: str = "1") -> HTMLResponse:
    """One image (NAME:TAG, NAME@DIGEST or its sha256 image ID): devices and bundles."""
    try:
        with session_scope(hub.engine) as session:
            image = fleet_queries.find_image(session, reference)
            chosen = status if status in STATUSES else None
            counts = queries.image_counts(session, image.image_id)
            devices = queries.image_devices(session, image.image_id, status=chosen,
                                            page=parse_page(page), size=CONFIG.page_size,
                                            counts=counts)
            bundles = queries.image_bundles(session, image.image_id)
            facts = {"name": image.name, "image_id": image.image_id,
                     "layers": len(image.diff_ids),
                     "size": sum(int(s) for s in image.layer_sizes),
                     "registered_by": image.registered_by, "registered_at": image.registered_at,
                     "build_id": image.build_id}
    except DeltaportError as exc:
        return error_page(exc, me)
    return render("image.html", {"me": me, "nav": "images", "img": facts, "counts": counts,
                                 "p": devices, "bundles": bundles, "status": status,
                                 "statuses": STATUSES, "reference": reference})
