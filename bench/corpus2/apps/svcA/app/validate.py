import re

SKU = re.compile(r"^[A-Z0-9][A-Z0-9-]{2,63}$")


class ValidationError(ValueError):
    pass


def parse_item(body):
    if not isinstance(body, dict):
        raise ValidationError("body must be a JSON object")
    sku = body.get("sku")
    if not isinstance(sku, str) or not SKU.match(sku):
        raise ValidationError("sku must match " + SKU.pattern)
    qty = body.get("quantity", 0)
    if not isinstance(qty, int) or qty < 0:
        raise ValidationError("quantity must be a non-negative integer")
    return {"sku": sku, "quantity": qty}
