"""The HTTP service's OpenAPI document, generated from :class:`EncodeOptions` (the one options schema) and the
operator's limits, served as ``GET /openapi.json``."""

from __future__ import annotations

from dataclasses import MISSING, fields
from enum import Enum
from typing import Any

from latentcodec import __version__
from latentcodec.bindings.http_limits import ServiceLimits
from latentcodec.bindings.pillow_plugin import MIME
from latentcodec.engine.options import EncodeOptions, parse_bool

_TYPES: dict[Any, str] = {int: "integer", float: "number", parse_bool: "boolean", str: "string"}
_BINARY = {"type": "string", "format": "binary"}
_HEALTH = ("model", "device", "max_batch", "worker")
_ERRORS = {
    "400": "bad input, options or framing",
    "401": "no valid bearer token",
    "408": "the body stalled past the timeout",
    "411": "neither a Content-Length nor a chunked body",
    "413": "body, image or stream pixels over the service's limits",
    "500": "engine failure",
    "503": "the queue or the connection slots are full",
}


def option_schemas(limits: ServiceLimits) -> dict[str, dict[str, Any]]:
    """Each encode option this service accepts, as a JSON schema: type, choices, default and help from its
    field; ``effort`` bounded by the operator, ``target_psnr`` absent unless allowed."""
    schemas = {}
    for option in fields(EncodeOptions):
        if option.name == "target_psnr" and not limits.allow_target_psnr:
            continue
        meta = option.metadata
        schema: dict[str, Any] = {"type": _TYPES.get(meta["parse"], "string"), "description": meta["help"]}
        if "choices" in meta:
            schema["enum"] = list(meta["choices"])
        if option.default is not MISSING and option.default is not None:
            default = option.default
            schema["default"] = default.name.lower() if isinstance(default, Enum) else default
        if option.name == "effort":
            schema.update(minimum=0, maximum=limits.max_effort)
        schemas[option.name] = schema
    return schemas


def _answers(ok: str, media: str) -> dict[str, Any]:
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    answers = {"200": {"description": ok, "content": {media: {"schema": _BINARY}}}}
    return answers | {code: {"description": text, "content": error} for code, text in _ERRORS.items()}


def _upload(media: tuple[str, ...], part: str, fields: dict[str, Any]) -> dict[str, Any]:
    form = {"type": "object", "properties": {part: _BINARY, **fields}, "required": [part]}
    return {
        "required": True,
        "content": {**{m: {"schema": _BINARY} for m in media}, "multipart/form-data": {"schema": form}},
    }


def openapi(limits: ServiceLimits) -> dict[str, Any]:
    """The OpenAPI 3.1 document of a service with ``limits``."""
    options = option_schemas(limits)
    query = [{"name": name, "in": "query", "required": False, "schema": s} for name, s in options.items()]
    denoise = {"type": "boolean", "default": True, "description": "run the denoiser the stream names"}
    secured = {"security": [{"bearer": []}]} if limits.token else {}
    encode = {
        "summary": "Encode an image (raw body, or the one file part of a form whose fields are options too)",
        "parameters": query,
        "requestBody": _upload(("image/*", "application/octet-stream"), "image", options),
        "responses": _answers("the stream", MIME),
        **secured,
    }
    decode = {
        "summary": "Decode a stream to a PNG (raw body, or the one file part of a form)",
        "parameters": [{"name": "denoise", "in": "query", "required": False, "schema": denoise}],
        "requestBody": _upload((MIME, "application/octet-stream"), "stream", {"denoise": denoise}),
        "responses": _answers("the decoded image", "image/png"),
        **secured,
    }
    health = {
        "type": "object",
        "properties": {n: {"type": "integer" if n == "max_batch" else "string"} for n in _HEALTH},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "latentcodec", "version": __version__, "description": "Latent-diffusion image codec"},
        "paths": {
            "/encode": {"post": encode},
            "/decode": {"post": decode},
            "/health": _get("the model, device and batching; 503 once the worker stopped", "application/json", health),
            "/metrics": _get("Prometheus metrics", "text/plain", {"type": "string"}),
            "/openapi.json": _get("this document", "application/json", {"type": "object"}),
        },
        "components": {
            "schemas": {
                "EncodeOptions": {"type": "object", "properties": options},
                "Error": {
                    "type": "object",
                    "properties": {"error": {"type": "string"}, "type": {"type": "string"}},
                    "required": ["error", "type"],
                },
            },
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _get(summary: str, media: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "responses": {"200": {"description": summary, "content": {media: {"schema": schema}}}},
        }
    }
