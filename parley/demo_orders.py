"""The demo's sample orders service: the "tenant backend" the demo bot's HTTP actions call.

Mounted at ``/demo/orders-api`` when the server runs with the demo. Orders live in memory
(they reset on restart)::

    GET  /orders/{id}            {id, status, carrier, eta, item, address}   (404 if unknown)
    POST /orders/{id}/cancel     {id, status: "cancelled"}                   (409 once shipped)
    POST /orders/{id}/address    {"address": "..."} -> {id, address}         (409 once delivered)
    POST /orders/{id}/claims     {"photo": upload id, "note": "..."} -> {claim_id}
"""

from __future__ import annotations

import copy
import itertools
import re
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

ORDERS: dict[str, dict[str, Any]] = {
    "PX-100234": {
        "status": "shipped",
        "carrier": "DHL",
        "eta": "Thursday 3 December",
        "item": "Desk lamp",
        "address": "12 Rue Oberkampf, 75011 Paris",
    },
    "PX-100235": {
        "status": "processing",
        "carrier": "not assigned yet",
        "eta": "Monday 7 December",
        "item": "Running shoes",
        "address": "Karl-Marx-Allee 90, 10243 Berlin",
    },
    "PX-100236": {
        "status": "delivered",
        "carrier": "UPS",
        "eta": "delivered on 27 November",
        "item": "Ceramic vase",
        "address": "4 Nile Street, London N1 7RF",
    },
    "PX-100237": {
        "status": "out for delivery",
        "carrier": "DPD",
        "eta": "today before 18:00",
        "item": "Bookshelf",
        "address": "Calle de Alcalá 45, 28014 Madrid",
    },
}


class _Refused(Exception):
    def __init__(self, status: int, error: str) -> None:
        super().__init__(error)
        self.status, self.error = status, error


def create_orders_app() -> Starlette:
    orders = copy.deepcopy(ORDERS)
    claims = itertools.count(5001)

    def find(request: Request) -> tuple[str, dict[str, Any]]:
        order_id = "PX-" + re.sub(r"\D", "", request.path_params["order_id"])
        if order_id not in orders:
            raise _Refused(404, f"no order {order_id}")
        return order_id, orders[order_id]

    async def get_order(request: Request) -> JSONResponse:
        order_id, order = find(request)
        return JSONResponse({"id": order_id, **order})

    async def cancel(request: Request) -> JSONResponse:
        order_id, order = find(request)
        if order["status"] not in ("processing", "cancelled"):
            raise _Refused(409, f"order {order_id} is already {order['status']}")
        order["status"] = "cancelled"
        return JSONResponse({"id": order_id, "status": "cancelled"})

    async def address(request: Request) -> JSONResponse:
        order_id, order = find(request)
        new = str((await _json(request)).get("address") or "").strip()
        if not new:
            raise _Refused(422, 'send {"address": "..."}')
        if order["status"] == "delivered":
            raise _Refused(409, f"order {order_id} was already delivered")
        order["address"] = new
        return JSONResponse({"id": order_id, "address": new})

    async def claim(request: Request) -> JSONResponse:
        order_id, _ = find(request)
        photo = (await _json(request)).get("photo")
        return JSONResponse(
            {"claim_id": f"CL-{next(claims)}", "order_id": order_id, "photo": photo}
        )

    async def refused(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, _Refused)
        return JSONResponse({"error": exc.error}, exc.status)

    return Starlette(
        routes=[
            Route("/orders/{order_id}", get_order),
            Route("/orders/{order_id}/cancel", cancel, methods=["POST"]),
            Route("/orders/{order_id}/address", address, methods=["POST"]),
            Route("/orders/{order_id}/claims", claim, methods=["POST"]),
        ],
        exception_handlers={_Refused: refused},
    )


async def _json(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
