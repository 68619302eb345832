import os
import time

import orjson
from fastapi import FastAPI, HTTPException
from fastapi.responses import ORJSONResponse

from .schema import Batch, Summary
from .store import RingStore

app = FastAPI(title="telemetry-ingest", default_response_class=ORJSONResponse)
store = RingStore(int(os.environ.get("RING_SIZE", "4096")))
started = time.monotonic()


@app.get("/healthz")
async def healthz():
    return {"ok": True, "uptime": round(time.monotonic() - started, 1), "points": len(store)}


@app.post("/v1/batches", status_code=202)
async def ingest(batch: Batch):
    if not batch.points:
        raise HTTPException(status_code=422, detail="empty batch")
    store.extend(batch.device, batch.points)
    return {"accepted": len(batch.points)}


@app.get("/v1/devices/{device}/summary", response_model=Summary)
async def summary(device: str):
    pts = store.for_device(device)
    if not pts:
        raise HTTPException(status_code=404, detail="no data")
    values = [p.value for p in pts]
    return Summary(device=device, count=len(values), minimum=min(values),
                   maximum=max(values), mean=sum(values) / len(values))


@app.get("/v1/export")
async def export():
    return ORJSONResponse(content=orjson.loads(orjson.dumps(store.snapshot())))
