"""The typed Python client of an OpenMaaS server (the CLI and the tests use it too)."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx
import numpy as np

from openmaas._oip_tensors import DTYPES, datatype_of, decode_response, encode_bytes_tensor
from openmaas.errors import RateLimitedError, error_class_for_code

__all__ = ["Client"]

DEFAULT_URL = "http://127.0.0.1:8000"


def _raise_for_problem(response: httpx.Response) -> None:
    if response.is_success:
        return
    try:
        problem = response.json()
    except ValueError:
        problem = {}
    if not isinstance(problem, dict):
        problem = {}
    code = str(problem.get("code", ""))
    detail = str(problem.get("detail") or response.text[:500] or response.reason_phrase)
    error = error_class_for_code(code)(detail, field=problem.get("field"))
    error.http_status = response.status_code  # type: ignore[attr-defined]
    if isinstance(error, RateLimitedError):
        error.retry_after = float(response.headers.get("Retry-After", 1))
    raise error


class Client:
    """Talk to an OpenMaaS server with an API key.

    ``url`` and ``api_key`` default to the ``OPENMAAS_URL`` and ``OPENMAAS_API_KEY``
    environment variables. Errors raise the same ``openmaas.errors`` classes the server uses.
    """

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = (url or os.environ.get("OPENMAAS_URL") or DEFAULT_URL).rstrip("/")
        key = api_key or os.environ.get("OPENMAAS_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._http = httpx.Client(
            base_url=self.url, headers=headers, timeout=timeout, transport=transport
        )
        self._signatures: dict[tuple[str, str | None], dict[str, Any]] = {}

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._http.request(method, path, **kwargs)
        _raise_for_problem(response)
        return response.json()

    # -- server ---------------------------------------------------------------------------

    def is_live(self) -> bool:
        """Whether the server answers its liveness probe."""
        return self._http.get("/v2/health/live").is_success

    def is_ready(self) -> bool:
        """Whether the server is ready to serve."""
        return self._http.get("/v2/health/ready").is_success

    def server_metadata(self) -> dict[str, Any]:
        """OIP server metadata: name, version, extensions."""
        result: dict[str, Any] = self._call("GET", "/v2")
        return result

    def whoami(self) -> dict[str, Any]:
        """The tenant, role and scopes of this client's key."""
        result: dict[str, Any] = self._call("GET", "/api/v1/whoami")
        return result

    # -- tenants and keys -----------------------------------------------------------------

    def create_tenant(self, name: str) -> dict[str, Any]:
        """Create a tenant; the result holds its owner's ``api_key`` (shown once)."""
        result: dict[str, Any] = self._call("POST", "/api/v1/tenants", json={"name": name})
        return result

    def list_tenants(self) -> list[dict[str, Any]]:
        """Tenants this key may see, with their weights."""
        result: list[dict[str, Any]] = self._call("GET", "/api/v1/tenants")
        return result

    def set_tenant_weight(self, name: str, weight: float) -> dict[str, Any]:
        """Set a tenant's fair-share weight in every model queue (platform admins)."""
        result: dict[str, Any] = self._call(
            "PATCH", f"/api/v1/tenants/{quote(name)}", json={"weight": weight}
        )
        return result

    def create_key(
        self,
        *,
        role: str = "consumer",
        name: str = "",
        expires_at: datetime | None = None,
        scopes: list[str] | None = None,
    ) -> dict[str, Any]:
        """Create an API key in this key's tenant; the result holds ``api_key`` (shown once)."""
        body: dict[str, Any] = {"role": role, "name": name}
        if expires_at is not None:
            body["expires_at"] = expires_at.isoformat()
        if scopes is not None:
            body["scopes"] = scopes
        result: dict[str, Any] = self._call("POST", "/api/v1/keys", json=body)
        return result

    def list_keys(self) -> list[dict[str, Any]]:
        """The keys of this key's tenant (never their secrets)."""
        result: list[dict[str, Any]] = self._call("GET", "/api/v1/keys")
        return result

    def revoke_key(self, key_id: str) -> dict[str, Any]:
        """Revoke a key by its id; effective on its next request."""
        result: dict[str, Any] = self._call("DELETE", f"/api/v1/keys/{quote(key_id)}")
        return result

    def rotate_key(self, key_id: str, *, overlap_seconds: int = 3600) -> dict[str, Any]:
        """A new key with the same rights; the old one keeps working ``overlap_seconds``."""
        result: dict[str, Any] = self._call(
            "POST",
            f"/api/v1/keys/{quote(key_id)}/rotate",
            json={"overlap_seconds": overlap_seconds},
        )
        return result

    def add_member(self, name: str, role: str = "consumer") -> dict[str, Any]:
        """Add a member to this key's tenant."""
        result: dict[str, Any] = self._call(
            "POST", "/api/v1/members", json={"name": name, "role": role}
        )
        return result

    def list_members(self) -> list[dict[str, Any]]:
        """The members of this key's tenant."""
        result: list[dict[str, Any]] = self._call("GET", "/api/v1/members")
        return result

    # -- erasure and audit ----------------------------------------------------------------

    def erase(self, **target: str | int) -> dict[str, Any]:
        """Erase for good: ``tenant=``, ``model=`` (with ``version=``), ``api_key=`` or
        ``member=``; returns the signed receipt."""
        result: dict[str, Any] = self._call("POST", "/api/v1/erasures", json=target)
        return result

    def verify_erasure(self, receipt_id: str) -> dict[str, Any]:
        """Check an erasure receipt: signature, audit chain, keys and ciphertexts gone."""
        result: dict[str, Any] = self._call("GET", f"/api/v1/erasures/{quote(receipt_id)}")
        return result

    def audit_records(self, *, after: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        """Audit records after ``after`` (own tenant; all for platform admins)."""
        result: list[dict[str, Any]] = self._call(
            "GET", "/api/v1/audit", params={"after": after, "limit": limit}
        )
        return result

    def verify_audit(self) -> dict[str, Any]:
        """Verify the whole audit chain (platform admins)."""
        result: dict[str, Any] = self._call("GET", "/api/v1/audit/verify")
        return result

    # -- models ---------------------------------------------------------------------------

    def list_models(self) -> list[dict[str, Any]]:
        """Own models and every public model."""
        result: list[dict[str, Any]] = self._call("GET", "/api/v1/models")
        return result

    def get_model(self, model: str) -> dict[str, Any]:
        """A model with its versions (signature, card) and aliases."""
        result: dict[str, Any] = self._call("GET", f"/api/v1/models/{quote(model)}")
        return result

    def publish(
        self,
        artifact: str | Path | bytes,
        name: str,
        *,
        alias: str | None = None,
        visibility: str | None = None,
        description: str | None = None,
        card: str | Path | bytes | Mapping[str, Any] | None = None,
        background: str | Path | bytes | np.ndarray | None = None,
    ) -> dict[str, Any]:
        """Publish a new version of model ``name`` from a file path or bytes.

        ``card`` is its model card (a dict, or a JSON / Markdown file or its bytes);
        ``background`` input rows for explanations (an array, or a CSV / JSON / .npy file).
        """
        data = _read(artifact)
        params = {
            k: v
            for k, v in {
                "alias": alias,
                "visibility": visibility,
                "description": description,
            }.items()
            if v is not None
        }
        path = f"/api/v1/models/{quote(name)}/versions"
        if card is None and background is None:
            result: dict[str, Any] = self._call(
                "POST",
                path,
                content=data,
                params=params,
                headers={"Content-Type": "application/octet-stream"},
            )
            return result
        files: dict[str, tuple[str, bytes]] = {"artifact": ("artifact", data)}
        if card is not None:
            raw = json.dumps(card).encode() if isinstance(card, Mapping) else _read(card)
            files["card"] = ("card", raw)
        if background is not None:
            if isinstance(background, np.ndarray):
                buffer = io.BytesIO()
                np.save(buffer, np.asarray(background, dtype=np.float64), allow_pickle=False)
                files["background"] = ("background.npy", buffer.getvalue())
            else:
                files["background"] = ("background", _read(background))
        published: dict[str, Any] = self._call("POST", path, files=files, params=params)
        return published

    def model_card(
        self, model: str, version: str | int = "latest", *, markdown: bool = False
    ) -> Any:
        """A version's model card: a dict, or its Markdown text when ``markdown``."""
        path = f"/api/v1/models/{quote(model)}/versions/{quote(str(version))}/card"
        if not markdown:
            return self._call("GET", path)
        response = self._http.get(path, headers={"Accept": "text/markdown"})
        _raise_for_problem(response)
        return response.text

    def set_alias(self, model: str, alias: str, version: int) -> dict[str, Any]:
        """Point ``alias`` (e.g. ``prod``) at a version."""
        result: dict[str, Any] = self._call(
            "PUT",
            f"/api/v1/models/{quote(model)}/aliases/{quote(alias)}",
            json={"version": version},
        )
        return result

    def update_model(
        self, model: str, *, visibility: str | None = None, description: str | None = None
    ) -> dict[str, Any]:
        """Change a model's visibility or description."""
        body = {
            k: v for k, v in {"visibility": visibility, "description": description}.items() if v
        }
        result: dict[str, Any] = self._call("PATCH", f"/api/v1/models/{quote(model)}", json=body)
        return result

    def share(
        self,
        model: str,
        tenant: str,
        *,
        quota_per_day: int | None = None,
        weight: float | None = None,
    ) -> dict[str, Any]:
        """Let ``tenant`` call ``model``: at most ``quota_per_day`` requests a day if given,
        at fair-share ``weight`` on this model if given (else the tenant's own weight)."""
        result: dict[str, Any] = self._call(
            "POST",
            f"/api/v1/models/{quote(model)}/grants",
            json={"tenant": tenant, "quota_per_day": quota_per_day, "weight": weight},
        )
        return result

    def unshare(self, model: str, tenant: str) -> None:
        """Stop sharing ``model`` with ``tenant``."""
        response = self._http.delete(f"/api/v1/models/{quote(model)}/grants/{quote(tenant)}")
        _raise_for_problem(response)

    def grants(self, model: str) -> list[dict[str, Any]]:
        """The tenants ``model`` is shared with."""
        result: list[dict[str, Any]] = self._call("GET", f"/api/v1/models/{quote(model)}/grants")
        return result

    def get_deployment(self, model: str) -> dict[str, Any]:
        """How ``model`` is served: replicas, batching, queue, resources, isolation."""
        result: dict[str, Any] = self._call("GET", f"/api/v1/models/{quote(model)}/deployment")
        return result

    def set_deployment(self, model: str, **fields: Any) -> dict[str, Any]:
        """Replace how ``model`` is served (``min_replicas=1``, ``max_batch_size=16``, ...).

        Fields not given take the server's defaults; to change one field and keep the others,
        pass ``**{**client.get_deployment(model), "max_queue": 64}``.
        """
        result: dict[str, Any] = self._call(
            "PUT", f"/api/v1/models/{quote(model)}/deployment", json=fields
        )
        return result

    # -- inference ------------------------------------------------------------------------

    @staticmethod
    def _model_path(model: str, version: str | int | None) -> str:
        path = f"/v2/models/{quote(model)}"
        return path if version is None else f"{path}/versions/{quote(str(version))}"

    def model_metadata(self, model: str, version: str | int | None = None) -> dict[str, Any]:
        """OIP model metadata: name, versions, inputs and outputs."""
        result: dict[str, Any] = self._call("GET", self._model_path(model, version))
        return result

    def infer_raw(
        self, model: str, request: Mapping[str, Any], version: str | int | None = None
    ) -> dict[str, Any]:
        """Send an OIP JSON inference request as is; return the OIP JSON response."""
        result: dict[str, Any] = self._call(
            "POST", self._model_path(model, version) + "/infer", json=dict(request)
        )
        return result

    def infer(
        self,
        model: str,
        inputs: Mapping[str, Any],
        *,
        version: str | int | None = None,
        outputs: Sequence[str] | None = None,
    ) -> dict[str, np.ndarray]:
        """Run a model on named inputs (lists or arrays); return named numpy outputs.

        Inputs are cast to the datatypes of the model's signature and sent as binary tensors.
        """
        key = (model, None if version is None else str(version))
        if key not in self._signatures:
            self._signatures[key] = self.model_metadata(model, version)
        specs = {s["name"]: s for s in self._signatures[key]["inputs"]}
        header_inputs, chunks = [], []
        for name, value in inputs.items():
            datatype = specs[name]["datatype"] if name in specs else None
            if datatype == "BYTES":
                array = np.asarray(value, dtype=object)
                raw = encode_bytes_tensor(array)
            else:
                array = np.asarray(value, dtype=DTYPES.get(datatype or ""))
                datatype = datatype or datatype_of(array)
                raw = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()
            header_inputs.append(
                {
                    "name": name,
                    "datatype": datatype,
                    "shape": list(array.shape),
                    "parameters": {"binary_data_size": len(raw)},
                }
            )
            chunks.append(raw)
        document: dict[str, Any] = {
            "inputs": header_inputs,
            "parameters": {"binary_data_output": True},
        }
        if outputs:
            document["outputs"] = [{"name": o} for o in outputs]
        header = json.dumps(document).encode()
        response = self._http.post(
            self._model_path(model, version) + "/infer",
            content=header + b"".join(chunks),
            headers={
                "Inference-Header-Content-Length": str(len(header)),
                "Content-Type": "application/octet-stream",
            },
        )
        _raise_for_problem(response)
        return decode_response(response)

    def explain(
        self,
        model: str,
        inputs: Mapping[str, Any],
        *,
        version: str | int | None = None,
        explainer: str = "auto",
        **parameters: Any,
    ) -> dict[str, Any]:
        """Explain the model's prediction for ``inputs`` (one named input).

        ``parameters`` go to the server as they are (``max_evals``, ``seed``, ``target``,
        ``baseline``, ...; see docs/explainability.md). The answer is the server's JSON with
        ``explanation.attributions`` and ``explanation.base_values`` as numpy arrays.
        """
        key = (model, None if version is None else str(version))
        if key not in self._signatures:
            self._signatures[key] = self.model_metadata(model, version)
        specs = {s["name"]: s for s in self._signatures[key]["inputs"]}
        tensors = []
        for name, value in inputs.items():
            datatype = specs[name]["datatype"] if name in specs else None
            if datatype == "BYTES":
                array = np.asarray(value, dtype=object)
                data: list[Any] = [
                    v.decode() if isinstance(v, bytes) else str(v) for v in array.reshape(-1)
                ]
            else:
                array = np.asarray(value, dtype=DTYPES.get(datatype or ""))
                datatype = datatype or datatype_of(array)
                data = array.reshape(-1).tolist()
            tensors.append(
                {"name": name, "datatype": datatype, "shape": list(array.shape), "data": data}
            )
        body = {"inputs": tensors, "parameters": {"explainer": explainer, **parameters}}
        result: dict[str, Any] = self._call(
            "POST", self._model_path(model, version) + "/explain", json=body
        )
        explanation = result["explanation"]
        for name in ("attributions", "base_values"):
            tensor = explanation.get(name)
            if isinstance(tensor, dict):  # language models answer a list per prompt span
                explanation[name] = np.asarray(tensor["data"], dtype=np.float64).reshape(
                    tensor["shape"]
                )
        return result

    def explain_heatmap(
        self,
        model: str,
        inputs: Mapping[str, Any],
        *,
        version: str | int | None = None,
        **parameters: Any,
    ) -> bytes:
        """The explanation of an image input as a PNG heatmap over the image."""
        key = (model, None if version is None else str(version))
        if key not in self._signatures:
            self._signatures[key] = self.model_metadata(model, version)
        specs = {s["name"]: s["datatype"] for s in self._signatures[key]["inputs"]}
        tensors = []
        for name, value in inputs.items():
            datatype = specs.get(name, "FP32")
            array = np.asarray(value, dtype=DTYPES.get(datatype, np.float32))
            tensors.append(
                {
                    "name": name,
                    "datatype": datatype,
                    "shape": list(array.shape),
                    "data": array.reshape(-1).tolist(),
                }
            )
        body = {"inputs": tensors, "parameters": parameters}
        response = self._http.post(
            self._model_path(model, version) + "/explain",
            json=body,
            headers={"Accept": "image/png"},
        )
        _raise_for_problem(response)
        return response.content


def _read(source: str | Path | bytes) -> bytes:
    return source if isinstance(source, bytes) else Path(source).read_bytes()
