from datetime import datetime

from pydantic import BaseModel, Field, field_validator


class Point(BaseModel):
    ts: datetime
    metric: str = Field(min_length=1, max_length=64)
    value: float

    @field_validator("metric")
    @classmethod
    def _lower(cls, v: str) -> str:
        return v.strip().lower()


class Batch(BaseModel):
    device: str = Field(pattern=r"^[a-z0-9-]{3,40}$")
    points: list[Point] = Field(max_length=5000)


class Summary(BaseModel):
    device: str
    count: int
    minimum: float
    maximum: float
    mean: float
