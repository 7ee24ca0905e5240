"""A local Stripe API for the test suite: the subset GPU Commons calls, over real HTTP.

The real `stripe` client is pointed at it (STRIPE_API_BASE), so requests go through the
library's own encoding, headers and error handling. It speaks Stripe's JSON object shapes,
form-encoded bodies (`metadata[k]=v`, `line_items[0][price]=...`), Idempotency-Key replay,
and Stripe's error format `{"error": {"type", "message", "code", "param"}}`.

Endpoints: POST /v1/customers, GET /v1/customers/{id}, POST /v1/checkout/sessions,
GET /v1/checkout/sessions/{id}, POST /v1/billing/meter_events, GET /v1/invoices,
GET /v1/invoices/{id}, POST /v1/refunds.

Every request is recorded (`requests`). `fail_next_meter_events(n)` makes the next n meter
event calls answer 500 (optionally after storing the event, as when a response is lost).
Helpers act as Stripe's side of the world: complete a checkout, create and pay invoices,
build and sign webhook events with the real `t=...,v1=HMAC-SHA256` scheme.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

API_VERSION = "2025-08-27.basil"


@dataclass
class RecordedRequest:
    method: str
    path: str
    params: dict[str, Any]
    headers: dict[str, str]


class StripeHTTPError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        error: dict[str, Any] = {"type": type, "message": message}
        if code:
            error["code"] = code
        if param:
            error["param"] = param
        self.body = {"error": error}


def parse_form(body: str) -> dict[str, Any]:
    """Decode Stripe's bracket notation into nested dicts (and lists for numeric keys)."""
    root: dict[str, Any] = {}
    for key, value in parse_qsl(body, keep_blank_values=True):
        parts = re.findall(r"[^\[\]]+|\[\]", key)
        node = root
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
    return _listify(root)


def _listify(node: Any) -> Any:
    if isinstance(node, dict):
        converted = {k: _listify(v) for k, v in node.items()}
        if converted and all(k.isdigit() for k in converted):
            return [converted[k] for k in sorted(converted, key=int)]
        return converted
    return node


def sign_payload(payload: str, secret: str, timestamp: int | None = None) -> str:
    """The Stripe-Signature header Stripe would send for `payload`."""
    ts = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{ts}.{payload}".encode(), hashlib.sha256).hexdigest()
    return f"t={ts},v1={mac}"


@dataclass
class FakeStripe:
    api_key: str = "sk_test_gpucommons"
    requests: list[RecordedRequest] = field(default_factory=list)
    prices: dict[str, dict[str, Any]] = field(default_factory=dict)
    customers: dict[str, dict[str, Any]] = field(default_factory=dict)
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    charges: dict[str, dict[str, Any]] = field(default_factory=dict)
    invoices: dict[str, dict[str, Any]] = field(default_factory=dict)
    meter_events: dict[str, dict[str, Any]] = field(default_factory=dict)
    refunds: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._idempotent: dict[tuple[str, str, str], tuple[int, dict[str, Any]]] = {}
        self._meter_failures = 0
        self._meter_fail_after_store = False
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the server first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeStripe:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                fake._handle(self, "GET")

            def do_POST(self) -> None:
                fake._handle(self, "POST")

            def do_DELETE(self) -> None:
                fake._handle(self, "DELETE")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # --- test controls --------------------------------------------------------------

    def fail_next_meter_events(self, count: int, *, after_store: bool = False) -> None:
        """The next `count` meter event calls answer 500; with after_store the event is kept
        first (Stripe got it, the response was lost)."""
        with self._lock:
            self._meter_failures = count
            self._meter_fail_after_store = after_store

    def requests_to(self, method: str, path_prefix: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == method and r.path.startswith(path_prefix)]

    def register_price(self, price_id: str, *, unit_amount: int, currency: str = "eur") -> None:
        self.prices[price_id] = {
            "id": price_id,
            "object": "price",
            "unit_amount": unit_amount,
            "currency": currency,
            "active": True,
            "type": "one_time",
        }

    def meter_total(self, customer_id: str, event_name: str | None = None) -> int:
        return sum(
            int(e["payload"]["value"])
            for e in self.meter_events.values()
            if e["payload"].get("stripe_customer_id") == customer_id
            and (event_name is None or e["event_name"] == event_name)
        )

    # --- Stripe's side of the world -------------------------------------------------

    def _id(self, prefix: str) -> str:
        return f"{prefix}_test_{next(self._ids):06d}{secrets.token_hex(4)}"

    def complete_checkout(self, session_id: str, *, payment_status: str = "paid") -> dict[str, Any]:
        """The customer finishes paying (or, for delayed methods, submits the payment)."""
        with self._lock:
            session = self.sessions[session_id]
            if not session["payment_intent"]:
                session["payment_intent"] = self._id("pi")
                charge_id = self._id("ch")
                self.charges[charge_id] = {
                    "id": charge_id,
                    "object": "charge",
                    "amount": session["amount_total"],
                    "amount_captured": session["amount_total"],
                    "amount_refunded": 0,
                    "captured": True,
                    "currency": session["currency"],
                    "customer": session["customer"],
                    "paid": True,
                    "payment_intent": session["payment_intent"],
                    "refunded": False,
                    "status": "succeeded",
                    "created": int(time.time()),
                    "livemode": False,
                    "metadata": {},
                }
            session["status"] = "complete"
            session["payment_status"] = payment_status
            return json.loads(json.dumps(session))

    def settle_async_payment(self, session_id: str, *, succeeded: bool = True) -> dict[str, Any]:
        with self._lock:
            session = self.sessions[session_id]
            session["payment_status"] = "paid" if succeeded else "unpaid"
            return json.loads(json.dumps(session))

    def charge_for(self, payment_intent: str) -> dict[str, Any]:
        return next(
            json.loads(json.dumps(c))
            for c in self.charges.values()
            if c["payment_intent"] == payment_intent
        )

    def create_invoice(
        self,
        customer: str,
        *,
        amount_due: int,
        currency: str = "eur",
        period_start: int | None = None,
        period_end: int | None = None,
        created: int | None = None,
    ) -> dict[str, Any]:
        now = int(time.time())
        invoice_id = self._id("in")
        invoice = {
            "id": invoice_id,
            "object": "invoice",
            "customer": customer,
            "number": f"GPUC-{len(self.invoices) + 1:04d}",
            "status": "draft",
            "currency": currency,
            "amount_due": amount_due,
            "amount_paid": 0,
            "amount_remaining": amount_due,
            "attempt_count": 0,
            "attempted": False,
            "billing_reason": "subscription_cycle",
            "collection_method": "charge_automatically",
            "created": created or now,
            "period_start": period_start or now - 30 * 86400,
            "period_end": period_end or now,
            "hosted_invoice_url": f"https://invoice.stripe.com/i/acct_test/{invoice_id}",
            "invoice_pdf": f"https://pay.stripe.com/invoice/acct_test/{invoice_id}/pdf",
            "livemode": False,
            "metadata": {},
            "status_transitions": {
                "finalized_at": None,
                "marked_uncollectible_at": None,
                "paid_at": None,
                "voided_at": None,
            },
        }
        self.invoices[invoice_id] = invoice
        return json.loads(json.dumps(invoice))

    def update_invoice(self, invoice_id: str, *, at: int | None = None, **changes: Any) -> dict:
        """Move an invoice (status="open"/"paid"/"void", attempt_count=...) and return it."""
        invoice = self.invoices[invoice_id]
        at = at or int(time.time())
        status = changes.get("status")
        if status == "open":
            invoice["status_transitions"]["finalized_at"] = at
        if status == "paid":
            invoice["status_transitions"]["paid_at"] = at
            invoice["amount_paid"] = invoice["amount_due"]
            invoice["amount_remaining"] = 0
        if status == "void":
            invoice["status_transitions"]["voided_at"] = at
        invoice.update(changes)
        return json.loads(json.dumps(invoice))

    # --- webhooks -------------------------------------------------------------------

    def event(
        self, type: str, obj: dict[str, Any], *, created: int | None = None, event_id: str = ""
    ) -> dict[str, Any]:
        return {
            "id": event_id or self._id("evt"),
            "object": "event",
            "api_version": API_VERSION,
            "created": created or int(time.time()),
            "data": {"object": obj},
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "type": type,
        }

    # --- HTTP -----------------------------------------------------------------------

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        split = urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length).decode() if length else ""
        params = parse_form(body if method == "POST" else split.query)
        headers = {k.lower(): v for k, v in handler.headers.items()}
        with self._lock:
            self.requests.append(RecordedRequest(method, split.path, params, headers))
        try:
            if headers.get("authorization") != f"Bearer {self.api_key}":
                raise StripeHTTPError(401, "Invalid API Key provided", code="api_key_invalid")
            key = headers.get("idempotency-key")
            if method == "POST" and key and (method, split.path, key) in self._idempotent:
                status, payload = self._idempotent[(method, split.path, key)]
            else:
                status, payload = 200, self._route(method, split.path, params)
                if method == "POST" and key:
                    self._idempotent[(method, split.path, key)] = (status, payload)
        except StripeHTTPError as exc:
            status, payload = exc.status, exc.body
        raw = json.dumps(payload).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(raw)))
        handler.send_header("Request-Id", f"req_{secrets.token_hex(7)}")
        handler.end_headers()
        handler.wfile.write(raw)

    def _route(self, method: str, path: str, params: dict[str, Any]) -> dict[str, Any]:
        routes: list[tuple[str, str, Any]] = [
            ("POST", r"/v1/customers", self._customer_create),
            ("GET", r"/v1/customers/(?P<id>[^/]+)", self._customer_get),
            ("POST", r"/v1/checkout/sessions", self._session_create),
            ("GET", r"/v1/checkout/sessions/(?P<id>[^/]+)", self._session_get),
            ("POST", r"/v1/billing/meter_events", self._meter_event_create),
            ("GET", r"/v1/invoices", self._invoice_list),
            ("GET", r"/v1/invoices/(?P<id>[^/]+)", self._invoice_get),
            ("POST", r"/v1/refunds", self._refund_create),
        ]
        for verb, pattern, view in routes:
            if verb == method and (match := re.fullmatch(pattern, path)):
                with self._lock:
                    return view(params, **match.groupdict())
        raise StripeHTTPError(404, f"Unrecognized request URL ({method}: {path}).")

    @staticmethod
    def _missing(name: str) -> StripeHTTPError:
        return StripeHTTPError(
            400, f"Missing required param: {name}.", code="parameter_missing", param=name
        )

    @staticmethod
    def _no_such(kind: str, value: str, param: str) -> StripeHTTPError:
        return StripeHTTPError(
            404, f"No such {kind}: '{value}'", code="resource_missing", param=param
        )

    def _customer_create(self, params: dict[str, Any]) -> dict[str, Any]:
        customer = {
            "id": self._id("cus"),
            "object": "customer",
            "created": int(time.time()),
            "email": params.get("email"),
            "name": params.get("name"),
            "description": params.get("description"),
            "metadata": params.get("metadata") or {},
            "livemode": False,
            "delinquent": False,
            "currency": None,
        }
        self.customers[customer["id"]] = customer
        return customer

    def _customer_get(self, params: dict[str, Any], id: str) -> dict[str, Any]:
        if id not in self.customers:
            raise self._no_such("customer", id, "id")
        return self.customers[id]

    def _session_create(self, params: dict[str, Any]) -> dict[str, Any]:
        mode = params.get("mode")
        if mode not in ("payment", "subscription", "setup"):
            raise (
                self._missing("mode")
                if not mode
                else StripeHTTPError(400, f"Invalid mode: {mode}", param="mode")
            )
        if "success_url" not in params:
            raise self._missing("success_url")
        customer = params.get("customer")
        if customer and customer not in self.customers:
            raise self._no_such("customer", customer, "customer")
        items = params.get("line_items") or []
        if not items:
            raise self._missing("line_items")
        total, currency = 0, None
        for i, item in enumerate(items):
            price = self.prices.get(item.get("price", ""))
            if price is None:
                raise self._no_such("price", item.get("price", ""), f"line_items[{i}][price]")
            quantity = int(item.get("quantity") or 1)
            if quantity < 1:
                raise StripeHTTPError(
                    400, "Quantity must be at least 1", param=f"line_items[{i}][quantity]"
                )
            total += price["unit_amount"] * quantity
            currency = price["currency"]
        session_id = self._id("cs")
        now = int(time.time())
        session = {
            "id": session_id,
            "object": "checkout.session",
            "amount_subtotal": total,
            "amount_total": total,
            "cancel_url": params.get("cancel_url"),
            "client_reference_id": params.get("client_reference_id"),
            "created": now,
            "currency": currency,
            "customer": customer,
            "customer_email": None,
            "expires_at": now + 86400,
            "livemode": False,
            "metadata": params.get("metadata") or {},
            "mode": mode,
            "payment_intent": None,
            "payment_status": "unpaid",
            "status": "open",
            "success_url": params["success_url"],
            "url": f"https://checkout.stripe.com/c/pay/{session_id}",
        }
        self.sessions[session_id] = session
        return session

    def _session_get(self, params: dict[str, Any], id: str) -> dict[str, Any]:
        if id not in self.sessions:
            raise self._no_such("checkout.session", id, "session")
        return self.sessions[id]

    def _meter_event_create(self, params: dict[str, Any]) -> dict[str, Any]:
        for name in ("event_name", "payload"):
            if not params.get(name):
                raise self._missing(name)
        payload = params["payload"]
        customer = payload.get("stripe_customer_id")
        if customer not in self.customers:
            raise StripeHTTPError(
                400,
                f"No customer with id '{customer}' exists.",
                param="payload[stripe_customer_id]",
            )
        if not re.fullmatch(r"-?\d+", str(payload.get("value", ""))):
            raise StripeHTTPError(
                400, "Meter event values must be whole numbers.", param="payload[value]"
            )
        identifier = params.get("identifier") or self._id("mev")
        fail = self._meter_failures > 0
        if fail and not self._meter_fail_after_store:
            self._meter_failures -= 1
            raise StripeHTTPError(500, "An unknown error occurred", type="api_error")
        if identifier in self.meter_events:
            raise StripeHTTPError(400, f"An event already exists with identifier {identifier}.")
        event = {
            "object": "billing.meter_event",
            "created": int(time.time()),
            "event_name": params["event_name"],
            "identifier": identifier,
            "livemode": False,
            "payload": payload,
            "timestamp": int(params.get("timestamp") or time.time()),
        }
        self.meter_events[identifier] = event
        if fail:
            self._meter_failures -= 1
            raise StripeHTTPError(500, "An unknown error occurred", type="api_error")
        return event

    def _invoice_list(self, params: dict[str, Any]) -> dict[str, Any]:
        rows = sorted(self.invoices.values(), key=lambda i: (-i["created"], i["id"]))
        if customer := params.get("customer"):
            rows = [i for i in rows if i["customer"] == customer]
        if after := params.get("starting_after"):
            ids = [i["id"] for i in rows]
            rows = rows[ids.index(after) + 1 :] if after in ids else []
        limit = int(params.get("limit") or 10)
        return {
            "object": "list",
            "data": rows[:limit],
            "has_more": len(rows) > limit,
            "url": "/v1/invoices",
        }

    def _invoice_get(self, params: dict[str, Any], id: str) -> dict[str, Any]:
        if id not in self.invoices:
            raise self._no_such("invoice", id, "invoice")
        return self.invoices[id]

    def _refund_create(self, params: dict[str, Any]) -> dict[str, Any]:
        intent = params.get("payment_intent")
        charge = next((c for c in self.charges.values() if c["payment_intent"] == intent), None)
        if charge is None:
            charge = self.charges.get(params.get("charge", ""))
        if charge is None:
            raise self._missing("charge")
        amount = int(params.get("amount") or charge["amount"] - charge["amount_refunded"])
        if amount <= 0 or charge["amount_refunded"] + amount > charge["amount"]:
            raise StripeHTTPError(
                400,
                f"Refund amount ({amount}) is greater than unrefunded amount on charge",
                code="amount_too_large",
                param="amount",
            )
        charge["amount_refunded"] += amount
        charge["refunded"] = charge["amount_refunded"] == charge["amount"]
        refund = {
            "id": self._id("re"),
            "object": "refund",
            "amount": amount,
            "charge": charge["id"],
            "currency": charge["currency"],
            "payment_intent": charge["payment_intent"],
            "status": "succeeded",
            "created": int(time.time()),
        }
        self.refunds[refund["id"]] = refund
        return refund
