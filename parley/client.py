"""A small Python client for Parley's REST API (``/v1``).

    client = ParleyClient("http://127.0.0.1:8000", api_key="pk_...")
    ds = client.create_dataset("orders.csv", type="text-intent")
    model = client.wait(client.train(ds["id"])["id"])
    client.predict(model["id"], "where is my parcel?")

Errors come back as ``ParleyAPIError`` with the server's ``status``, ``code`` and ``message``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"
FINISHED = ("succeeded", "failed", "cancelled")


class ParleyAPIError(Exception):
    def __init__(self, status: int, code: str, message: str, body: Any = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message, self.body = status, code, message, body


class ParleyClient:
    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = (url or os.environ.get("PARLEY_URL") or DEFAULT_URL).rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get("PARLEY_API_KEY")
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        self._http = httpx.Client(
            base_url=self.url + "/v1", headers=headers, timeout=timeout, transport=transport
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ParleyClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._request(method, path, **kwargs)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.ConnectError as e:
            raise ParleyAPIError(
                0,
                "unreachable",
                f"cannot reach Parley at {self.url}: is `parley serve` running?"
                " (set PARLEY_URL for another server)",
            ) from e
        if response.status_code >= 400:
            try:
                body = response.json()
                code, message = body.get("error", "error"), body.get("message", response.text)
            except ValueError:
                body, code, message = None, "error", response.text
            raise ParleyAPIError(response.status_code, code, message, body)
        return response

    # tenants and keys
    def create_tenant(self, name: str, *, operator_token: str) -> dict[str, Any]:
        return self._call(
            "POST",
            "/tenants",
            json={"name": name},
            headers={"Authorization": f"Bearer {operator_token}"},
        )

    def create_key(self, scopes: list[str], name: str = "") -> dict[str, Any]:
        return self._call("POST", "/keys", json={"scopes": scopes, "name": name})

    def list_keys(self) -> list[dict[str, Any]]:
        return self._call("GET", "/keys")

    def revoke_key(self, key_id: str) -> dict[str, Any]:
        return self._call("DELETE", f"/keys/{key_id}")

    # datasets
    def create_dataset(
        self, path: str | Path, *, type: str, name: str | None = None, format: str | None = None
    ) -> dict[str, Any]:
        path = Path(path)
        data = {"type": type, "name": name or path.stem}
        if format:
            data["format"] = format
        with path.open("rb") as f:
            return self._call("POST", "/datasets", data=data, files={"file": (path.name, f)})

    def create_dataset_from_examples(
        self, name: str, type: str, examples: list[dict[str, Any]]
    ) -> dict[str, Any]:
        return self._call(
            "POST", "/datasets", json={"name": name, "type": type, "examples": examples}
        )

    def list_datasets(self) -> list[dict[str, Any]]:
        return self._call("GET", "/datasets")

    def get_dataset(self, dataset_id: str) -> dict[str, Any]:
        return self._call("GET", f"/datasets/{dataset_id}")

    def wait_dataset(self, dataset_id: str, *, timeout: float = 600) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            dataset = self.get_dataset(dataset_id)
            if dataset["status"] != "processing" or time.monotonic() > deadline:
                return dataset
            time.sleep(0.5)

    def list_examples(
        self, dataset_id: str, *, offset: int = 0, limit: int = 100, label: str | None = None
    ) -> dict[str, Any]:
        params: dict[str, Any] = {"offset": offset, "limit": limit}
        if label is not None:
            params["label"] = label
        return self._call("GET", f"/datasets/{dataset_id}/examples", params=params)

    def add_examples(self, dataset_id: str, examples: list[dict[str, Any]]) -> dict[str, Any]:
        return self._call("POST", f"/datasets/{dataset_id}/examples", json=examples)

    def add_examples_file(self, dataset_id: str, path: str | Path) -> dict[str, Any]:
        path = Path(path)
        with path.open("rb") as f:
            return self._call(
                "POST", f"/datasets/{dataset_id}/examples", files={"file": (path.name, f)}
            )

    def delete_dataset(self, dataset_id: str) -> None:
        self._call("DELETE", f"/datasets/{dataset_id}")

    # models
    def train(
        self,
        dataset_id: str,
        *,
        name: str | None = None,
        backend: str | None = None,
        params: dict[str, Any] | None = None,
        alias: str | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"dataset_id": dataset_id, "params": params or {}}
        for key, value in (("name", name), ("backend", backend), ("alias", alias)):
            if value is not None:
                body[key] = value
        return self._call("POST", "/models", json=body)

    def get_model(self, model_id: str) -> dict[str, Any]:
        return self._call("GET", f"/models/{model_id}")

    def list_models(self, dataset_id: str | None = None) -> list[dict[str, Any]]:
        params = {"dataset_id": dataset_id} if dataset_id else None
        return self._call("GET", "/models", params=params)

    def wait(
        self,
        model_id: str,
        *,
        timeout: float = 3600,
        interval: float = 0.5,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Poll until the model is succeeded, failed or cancelled (or ``timeout`` passes)."""
        deadline = time.monotonic() + timeout
        while True:
            model = self.get_model(model_id)
            if on_progress is not None:
                on_progress(model)
            if model["status"] in FINISHED:
                return model
            if time.monotonic() > deadline:
                raise TimeoutError(f"model {model_id} is still {model['status']}")
            time.sleep(interval)

    def learning_curve(self, model_id: str) -> dict[str, Any]:
        return self._call("GET", f"/models/{model_id}/learning-curve")

    def plot(
        self, model_id: str, kind: str, fmt: str = "png", *, max_labels: int | None = None
    ) -> bytes:
        """A model's chart (``confusion-matrix``, ``learning-curve``, ``out-of-scope``,
        ``per-label``, ``ap-per-label``) as SVG or PNG bytes."""
        params = {} if max_labels is None else {"max_labels": max_labels}
        return self._request("GET", f"/models/{model_id}/plots/{kind}.{fmt}", params=params).content

    def export_model(self, model_id: str, fmt: str = "onnx") -> bytes:
        """A model exported as a zip (``model.onnx``, labels, preprocessing, README, card)."""
        return self._request("GET", f"/models/{model_id}/export", params={"format": fmt}).content

    def model_card(self, model_id: str, *, as_json: bool = False) -> str:
        """A model's card: Markdown (Hugging Face layout), or its JSON text with ``as_json``."""
        accept = "application/json" if as_json else "text/markdown"
        return self._request("GET", f"/models/{model_id}/card", headers={"Accept": accept}).text

    def held_out(self, model_id: str, **filters: Any) -> dict[str, Any]:
        """Held-out examples with their predictions (``label=``, ``predicted=``, ``offset=``,
        ``limit=``)."""
        return self._call("GET", f"/models/{model_id}/held-out", params=filters)

    def set_out_of_scope_threshold(self, model_id: str, threshold: float | None) -> dict[str, Any]:
        """Move an intent model's out-of-scope threshold (``None``: the calibrated one)."""
        body = {"out_of_scope_threshold": threshold}
        return self._call("PATCH", f"/models/{model_id}", json=body)

    def cancel(self, model_id: str) -> dict[str, Any]:
        return self._call("POST", f"/models/{model_id}/cancel")

    def delete_model(self, model_id: str) -> None:
        self._call("DELETE", f"/models/{model_id}")

    # aliases
    def set_alias(self, name: str, model_id: str) -> dict[str, Any]:
        return self._call("PUT", f"/aliases/{name}", json={"model_id": model_id})

    def list_aliases(self) -> list[dict[str, Any]]:
        return self._call("GET", "/aliases")

    def delete_alias(self, name: str) -> None:
        self._call("DELETE", f"/aliases/{name}")

    # prediction
    def predict(self, model: str, text: str | list[str], *, num_results: int = 5) -> dict[str, Any]:
        """``text`` (a string) or a list of texts; ``model`` is an id or an alias."""
        key = "text" if isinstance(text, str) else "texts"
        return self._call(
            "POST", f"/models/{model}/predict", json={key: text, "num_results": num_results}
        )

    def predict_images(
        self, model: str, images: str | Path | list[str | Path], **options: Any
    ) -> dict[str, Any]:
        """Image models: one image file or several (``results`` then holds one answer each);
        ``options``: ``num_results``, ``min_score`` (detection), ``engine`` / ``task`` (OCR)."""
        paths = [images] if isinstance(images, (str, Path)) else list(images)
        files = [("file", (Path(p).name, Path(p).read_bytes())) for p in paths]
        data = {k: str(v) for k, v in options.items() if v is not None}
        return self._call("POST", f"/models/{model}/predict", files=files, data=data)

    def ocr(
        self, image: str | Path, *, engine: str | None = None, task: str | None = None
    ) -> dict[str, Any]:
        """The text in an image (``prebuilt-ocr``): ``{text, lines, engine[, entities]}``."""
        return self.predict_images("prebuilt-ocr", image, engine=engine, task=task)

    def health(self) -> dict[str, Any]:
        return self._call("GET", "/health")
