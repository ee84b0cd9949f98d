"""Per-record validation against aisle's contract and the Retail API's limits.

A check either returns a typed record or raises :class:`Invalid` with a
stable reason code and a sentence a person understands; the caller turns
that into a dead letter. Limits follow the Retail API's documented ones,
so anything aisle writes imports there without errors.

>>> validate_product({"id": "sku-1", "title": "Tea", "priceInfo": {"price": 2.5, "currencyCode": "EUR"}}).id
'sku-1'
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import re
from collections.abc import Mapping

from transforms.records import (
    AVAILABILITY,
    EVENT_TYPES,
    CustomAttribute,
    Image,
    PriceInfo,
    Product,
    ProductDetail,
    ProductRef,
    PurchaseTransaction,
    UserEvent,
    UserInfo,
)

__all__ = [
    "Invalid",
    "Limits",
    "LIMITS",
    "REASONS",
    "validate_product",
    "validate_event",
    "parse_time",
    "is_currency",
]


class Invalid(ValueError):
    """A record failed a check: ``reason`` is a code, ``str(exc)`` the explanation."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


# Every reason code a dead letter can carry, with what it means.
REASONS = {
    "MALFORMED_ROW": "the line is not a well-formed record (wrong column count, unbalanced quotes, truncated)",
    "MALFORMED_JSON": "the line is not a JSON object",
    "ENCODING_ERROR": "the bytes are not valid UTF-8",
    "MISSING_ID": "a required id is empty",
    "MISSING_FIELD": "a required field is empty",
    "ID_TOO_LONG": "an id is longer than the Retail API allows",
    "FIELD_TOO_LONG": "a text field is longer than the Retail API allows",
    "TOO_MANY_VALUES": "a repeated field has more values than the Retail API allows",
    "BAD_TYPE": "a field has the wrong type",
    "BAD_QUANTITY": "a quantity is not an integer",
    "BAD_PRICE": "a price is not a number",
    "NEGATIVE_PRICE": "a price is below zero",
    "ZERO_PRICE": "a purchase line has price zero (the Retail API needs non-zero revenue)",
    "ZERO_QUANTITY": "a quantity is zero",
    "NEGATIVE_QUANTITY": "a negative quantity outside a cancellation (a stock adjustment)",
    "POSITIVE_CANCELLATION": "a cancellation line with a positive quantity",
    "QUANTITY_OUT_OF_RANGE": "a quantity beyond the sane range",
    "BAD_TIMESTAMP": "a timestamp cannot be parsed",
    "TIMESTAMP_OUT_OF_RANGE": "a timestamp is in the future or implausibly old",
    "UNKNOWN_EVENT_TYPE": "the event type is not one the Retail API knows",
    "BAD_CURRENCY": "a currency code is not ISO 4217",
    "BAD_AVAILABILITY": "availability is not one of the Retail API's values",
    "BAD_ATTRIBUTE": "a custom attribute is malformed",
    "MISSING_PRODUCT_DETAILS": "the event type needs productDetails",
    "MISSING_TRANSACTION": "a purchase-complete needs purchaseTransaction with non-zero revenue",
    "BAD_CUSTOMER_ID": "a customer id is not numeric",
    "MAPPING_ERROR": "a mapped column is missing from the row",
    "RECORD_TOO_LARGE": "a single record is larger than any valid one can be",
    "UNREADABLE_FILE": "a whole input file could not be read (after retries) or decompressed",
}


class Limits:
    """The Retail API's limits that aisle enforces (see its Product and UserEvent reference)."""

    id_chars = 128
    visitor_id_chars = 128
    title_chars = 1000
    description_chars = 5000
    brands = 30
    brand_chars = 1000
    categories = 250
    category_chars = 5000
    images = 300
    attribute_keys = 200
    attribute_key_chars = 128
    attribute_values = 400
    attribute_text_chars = 256
    product_details = 2000
    max_quantity = 1_000_000
    min_event_time = dt.datetime(1990, 1, 1, tzinfo=dt.timezone.utc)
    max_future = dt.timedelta(days=1)


LIMITS = Limits()
_ATTRIBUTE_KEY = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_]*$")


@functools.lru_cache(maxsize=1)
def _currencies() -> frozenset[str]:
    import pycountry

    return frozenset(c.alpha_3 for c in pycountry.currencies)


def is_currency(code: object) -> bool:
    return isinstance(code, str) and code in _currencies()


def parse_time(value: object, *, now: dt.datetime, field: str = "eventTime") -> dt.datetime:
    """An RFC 3339 / ISO 8601 timestamp (naive means UTC) within the sane range."""
    if isinstance(value, dt.datetime):
        t = value
    elif isinstance(value, str) and value.strip():
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            t = dt.datetime.fromisoformat(text)
        except ValueError:
            raise Invalid("BAD_TIMESTAMP", f"{field} {value!r} is not an RFC 3339 timestamp") from None
    elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        t = dt.datetime.fromtimestamp(value, dt.timezone.utc)
    else:
        raise Invalid("BAD_TIMESTAMP", f"{field} is missing or not a timestamp: {value!r}")
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.timezone.utc)
    t = t.astimezone(dt.timezone.utc)
    if t < LIMITS.min_event_time or t > now + LIMITS.max_future:
        raise Invalid("TIMESTAMP_OUT_OF_RANGE", f"{field} {value!r} is outside [{LIMITS.min_event_time:%Y-%m-%d}, now + 1 day]")
    return t


def _text(record: Mapping, key: str, *, required: bool, max_chars: int, reason_missing: str = "MISSING_FIELD") -> str | None:
    value = record.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise Invalid(reason_missing, f"{key} is required and empty")
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise Invalid("BAD_TYPE", f"{key} must be a string, got {type(value).__name__}")
    value = value.strip()
    if len(value) > max_chars:
        reason = "ID_TOO_LONG" if reason_missing == "MISSING_ID" else "FIELD_TOO_LONG"
        raise Invalid(reason, f"{key} has {len(value)} characters; the limit is {max_chars}")
    return value


def _strings(record: Mapping, key: str, *, max_items: int, max_chars: int) -> tuple[str, ...]:
    value = record.get(key)
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise Invalid("BAD_TYPE", f"{key} must be a list of strings, got {type(value).__name__}")
    if len(value) > max_items:
        raise Invalid("TOO_MANY_VALUES", f"{key} has {len(value)} values; the limit is {max_items}")
    out = []
    for v in value:
        if not isinstance(v, str):
            raise Invalid("BAD_TYPE", f"{key} must hold strings, found {type(v).__name__}")
        if len(v) > max_chars:
            raise Invalid("FIELD_TOO_LONG", f"a value of {key} has {len(v)} characters; the limit is {max_chars}")
        if v.strip():
            out.append(v.strip())
    return tuple(out)


def _number(value: object, field: str, reason: str = "BAD_PRICE") -> float:
    if isinstance(value, bool):
        raise Invalid(reason, f"{field} must be a number, got a boolean")
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise Invalid(reason, f"{field} {value!r} is not a number") from None
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise Invalid(reason, f"{field} must be a finite number, got {value!r}")
    return float(value)


def _pixels(image: Mapping, key: str) -> int | None:
    value = image.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise Invalid("BAD_TYPE", f"image {key} must be a whole number of pixels, got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise Invalid("BAD_TYPE", f"image {key} must be a whole number of pixels, got {value!r}") from None
    if not math.isfinite(number) or number != int(number) or number < 0 or number > 1_000_000:
        raise Invalid("BAD_TYPE", f"image {key} must be a whole number of pixels between 0 and 1,000,000, got {value!r}")
    return int(number)


def _attributes(value: object) -> dict[str, CustomAttribute] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise Invalid("BAD_ATTRIBUTE", f"attributes must be an object, got {type(value).__name__}")
    if len(value) > LIMITS.attribute_keys:
        raise Invalid("TOO_MANY_VALUES", f"{len(value)} attribute keys; the limit is {LIMITS.attribute_keys}")
    out: dict[str, CustomAttribute] = {}
    for key, attr in value.items():
        if not isinstance(key, str) or not _ATTRIBUTE_KEY.match(key) or len(key) > LIMITS.attribute_key_chars:
            raise Invalid("BAD_ATTRIBUTE", f"attribute key {key!r} must match [a-zA-Z0-9][a-zA-Z0-9_]* and be at most 128 characters")
        if isinstance(attr, (str, int, float)) and not isinstance(attr, bool):
            attr = {"text": [attr]} if isinstance(attr, str) else {"numbers": [attr]}
        if not isinstance(attr, Mapping):
            raise Invalid("BAD_ATTRIBUTE", f"attribute {key!r} must be {{text: [...]}} or {{numbers: [...]}}")
        text = _strings(attr, "text", max_items=LIMITS.attribute_values, max_chars=LIMITS.attribute_text_chars)
        numbers = attr.get("numbers") or []
        if not isinstance(numbers, (list, tuple)):
            raise Invalid("BAD_ATTRIBUTE", f"attribute {key!r}: numbers must be a list")
        nums = tuple(_number(n, f"attributes.{key}.numbers", "BAD_ATTRIBUTE") for n in numbers)
        if text and nums:
            raise Invalid("BAD_ATTRIBUTE", f"attribute {key!r} has both text and numbers; the Retail API allows one")
        out[key] = CustomAttribute(text=text, numbers=nums)
    return out


def _with_flag(attributes: dict | None, imputed: list[str]) -> dict | None:
    if not imputed:
        return attributes
    attributes = dict(attributes or {})
    attributes["imputed_fields"] = CustomAttribute(text=tuple(imputed))
    return attributes


def validate_product(record: object, *, default_currency: str = "USD") -> Product:
    """A Retail-API-shaped product dict as a :class:`Product`, or :class:`Invalid`."""
    if not isinstance(record, Mapping):
        raise Invalid("MALFORMED_JSON", f"a product must be a JSON object, got {type(record).__name__}")
    imputed: list[str] = []
    pid = _text(record, "id", required=True, max_chars=LIMITS.id_chars, reason_missing="MISSING_ID")
    title = _text(record, "title", required=True, max_chars=LIMITS.title_chars)
    description = _text(record, "description", required=False, max_chars=LIMITS.description_chars)
    categories = _strings(record, "categories", max_items=LIMITS.categories, max_chars=LIMITS.category_chars)
    brands = _strings(record, "brands", max_items=LIMITS.brands, max_chars=LIMITS.brand_chars)
    price_info = None
    raw_price = record.get("priceInfo")
    if raw_price is not None:
        if not isinstance(raw_price, Mapping):
            raise Invalid("BAD_TYPE", "priceInfo must be an object with price and currencyCode")
        price = _number(raw_price.get("price"), "priceInfo.price")
        if price < 0:
            raise Invalid("NEGATIVE_PRICE", f"priceInfo.price is {price}; prices cannot be negative")
        currency = raw_price.get("currencyCode")
        if currency in (None, ""):
            currency = default_currency
            imputed.append("priceInfo.currencyCode")
        if not is_currency(currency):
            raise Invalid("BAD_CURRENCY", f"priceInfo.currencyCode {currency!r} is not an ISO 4217 code")
        original = raw_price.get("originalPrice")
        price_info = PriceInfo(
            price=price,
            currencyCode=currency,
            originalPrice=None if original is None else _number(original, "priceInfo.originalPrice"),
        )
    images_raw = record.get("images") or []
    if not isinstance(images_raw, (list, tuple)):
        raise Invalid("BAD_TYPE", "images must be a list of {uri}")
    if len(images_raw) > LIMITS.images:
        raise Invalid("TOO_MANY_VALUES", f"{len(images_raw)} images; the limit is {LIMITS.images}")
    images = []
    for img in images_raw:
        if isinstance(img, str):
            img = {"uri": img}
        if not isinstance(img, Mapping) or not isinstance(img.get("uri"), str) or not img["uri"].strip():
            raise Invalid("BAD_TYPE", "each image needs a non-empty uri")
        images.append(Image(uri=img["uri"].strip(), height=_pixels(img, "height"), width=_pixels(img, "width")))
    availability = record.get("availability")
    if availability in (None, ""):
        availability = "IN_STOCK"
        imputed.append("availability")
    if availability not in AVAILABILITY:
        raise Invalid("BAD_AVAILABILITY", f"availability {availability!r} is not one of {sorted(AVAILABILITY)}")
    attributes = _attributes(record.get("attributes"))
    return Product(
        id=pid,
        title=title,
        description=description,
        categories=categories,
        brands=brands,
        priceInfo=price_info,
        images=tuple(images),
        attributes=_with_flag(attributes, imputed),
        availability=availability,
        uri=_text(record, "uri", required=False, max_chars=5000),
    )


_NEEDS_PRODUCTS = {"detail-page-view", "add-to-cart", "purchase-complete", "remove-from-cart"}
_NEEDS_QUANTITY = {"add-to-cart", "purchase-complete"}


def validate_event(record: object, *, now: dt.datetime, default_currency: str = "USD") -> UserEvent:
    """A Retail-API-shaped user event dict as a :class:`UserEvent`, or :class:`Invalid`."""
    if not isinstance(record, Mapping):
        raise Invalid("MALFORMED_JSON", f"an event must be a JSON object, got {type(record).__name__}")
    event_type = _text(record, "eventType", required=True, max_chars=64)
    if event_type not in EVENT_TYPES:
        raise Invalid("UNKNOWN_EVENT_TYPE", f"eventType {event_type!r} is not one of {sorted(EVENT_TYPES)}")
    visitor = _text(record, "visitorId", required=True, max_chars=LIMITS.visitor_id_chars, reason_missing="MISSING_ID")
    when = parse_time(record.get("eventTime"), now=now)
    user_info = None
    raw_user = record.get("userInfo")
    if isinstance(raw_user, Mapping) and raw_user.get("userId") not in (None, ""):
        user_info = UserInfo(userId=_text(raw_user, "userId", required=True, max_chars=LIMITS.id_chars, reason_missing="MISSING_ID"))
    details_raw = record.get("productDetails") or []
    if not isinstance(details_raw, (list, tuple)):
        raise Invalid("BAD_TYPE", "productDetails must be a list")
    if len(details_raw) > LIMITS.product_details:
        raise Invalid("TOO_MANY_VALUES", f"{len(details_raw)} productDetails; the limit is {LIMITS.product_details}")
    details = []
    for n, d in enumerate(details_raw):
        product = d.get("product") if isinstance(d, Mapping) else None
        if not isinstance(product, Mapping):
            raise Invalid("BAD_TYPE", "each productDetails entry needs product: {id}")
        try:
            pid = _text(product, "id", required=True, max_chars=LIMITS.id_chars, reason_missing="MISSING_ID")
        except Invalid as exc:  # say which id: the event has several
            raise Invalid(exc.reason, f"productDetails[{n}].product.{exc.detail}") from None
        quantity = d.get("quantity")
        if quantity is not None:
            if isinstance(quantity, bool) or not isinstance(quantity, (int, float, str)):
                raise Invalid("BAD_QUANTITY", f"quantity {quantity!r} is not an integer")
            try:
                q = float(quantity)
            except ValueError:
                raise Invalid("BAD_QUANTITY", f"quantity {quantity!r} is not an integer") from None
            if not math.isfinite(q) or q != int(q):
                raise Invalid("BAD_QUANTITY", f"quantity {quantity!r} is not an integer")
            quantity = int(q)
            if quantity <= 0:
                raise Invalid("ZERO_QUANTITY" if quantity == 0 else "NEGATIVE_QUANTITY", f"quantity {quantity} must be positive")
            if quantity > LIMITS.max_quantity:
                raise Invalid("QUANTITY_OUT_OF_RANGE", f"quantity {quantity} exceeds {LIMITS.max_quantity}")
        elif event_type in _NEEDS_QUANTITY:
            raise Invalid("BAD_QUANTITY", f"{event_type} needs a quantity for product {pid!r}")
        details.append(ProductDetail(product=ProductRef(id=pid), quantity=quantity))
    if event_type in _NEEDS_PRODUCTS and not details:
        raise Invalid("MISSING_PRODUCT_DETAILS", f"{event_type} needs at least one productDetails entry")
    transaction = None
    raw_tx = record.get("purchaseTransaction")
    if raw_tx is not None:
        if not isinstance(raw_tx, Mapping):
            raise Invalid("BAD_TYPE", "purchaseTransaction must be an object")
        revenue = _number(raw_tx.get("revenue"), "purchaseTransaction.revenue")
        currency = raw_tx.get("currencyCode") or default_currency
        if not is_currency(currency):
            raise Invalid("BAD_CURRENCY", f"purchaseTransaction.currencyCode {currency!r} is not an ISO 4217 code")
        tx_id = _text(raw_tx, "id", required=False, max_chars=LIMITS.id_chars)
        transaction = PurchaseTransaction(revenue=revenue, currencyCode=currency, id=tx_id)
    if event_type == "purchase-complete" and (transaction is None or transaction.revenue == 0):
        raise Invalid("MISSING_TRANSACTION", "purchase-complete needs purchaseTransaction with non-zero revenue and a currencyCode")
    return UserEvent(
        eventType=event_type,
        visitorId=visitor,
        eventTime=when,
        userInfo=user_info,
        productDetails=tuple(details),
        purchaseTransaction=transaction,
        attributes=_attributes(record.get("attributes")),
        sessionId=_text(record, "sessionId", required=False, max_chars=LIMITS.id_chars),
    )
