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


def create_orders_app() -> Starlette:
    orders = copy.deepcopy(ORDERS)
    claims = itertools.count(5001)

    def find(request: Request) -> tuple[str, dict[str, Any]] | JSONResponse:
        digits = re.sub(r"\D", "", request.path_params["order_id"])
        order_id = f"PX-{digits}"
        order = orders.get(order_id)
        if order is None:
            return JSONResponse({"error": f"no order {order_id}"}, 404)
        return order_id, order

    async def get_order(request: Request) -> JSONResponse:
        found = find(request)
        if isinstance(found, JSONResponse):
            return found
        order_id, order = found
        return JSONResponse({"id": order_id, **order})

    async def cancel(request: Request) -> JSONResponse:
        found = find(request)
        if isinstance(found, JSONResponse):
            return found
        order_id, order = found
        if order["status"] not in ("processing", "cancelled"):
            return JSONResponse({"error": f"order {order_id} is already {order['status']}"}, 409)
        order["status"] = "cancelled"
        return JSONResponse({"id": order_id, "status": "cancelled"})

    async def address(request: Request) -> JSONResponse:
        found = find(request)
        if isinstance(found, JSONResponse):
            return found
        order_id, order = found
        body = await _json(request)
        new = str(body.get("address") or "").strip()
        if not new:
            return JSONResponse({"error": 'send {"address": "..."}'}, 422)
        if order["status"] == "delivered":
            return JSONResponse({"error": f"order {order_id} was already delivered"}, 409)
        order["address"] = new
        return JSONResponse({"id": order_id, "address": new})

    async def claim(request: Request) -> JSONResponse:
        found = find(request)
        if isinstance(found, JSONResponse):
            return found
        order_id, _ = found
        body = await _json(request)
        return JSONResponse(
            {"claim_id": f"CL-{next(claims)}", "order_id": order_id, "photo": body.get("photo")}
        )

    return Starlette(
        routes=[
            Route("/orders/{order_id}", get_order),
            Route("/orders/{order_id}/cancel", cancel, methods=["POST"]),
            Route("/orders/{order_id}/address", address, methods=["POST"]),
            Route("/orders/{order_id}/claims", claim, methods=["POST"]),
        ]
    )


async def _json(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
