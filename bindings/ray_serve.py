"""The HTTP service on Ray Serve (``pip install latentcodec[serve]``): the app of
:mod:`~latentcodec.bindings.http_service`, built in each replica over a codec of its own.

Each replica holds one :class:`Codec` (one GPU each where the cluster has GPUs, else one CPU) and the app's
:class:`RequestQueue`, which batches the requests Serve routes to it. Serve's proxy speaks HTTP and spreads requests
over the replicas, at most ``2 * batch_size`` on one at a time (a batch running, the next filling); the rest wait in
the proxy, up to the service's ``max_pending`` (503 past it). Serve restarts a replica that dies or fails its health
check (the queue's worker stopped), and scales between ``min_replicas`` and ``max_replicas`` on the requests each
replica holds (``batch_size`` each is the target).

- ``latentcodec serve --ray`` (:func:`deployed`: Ray started or joined, the app deployed),
- ``serve run latentcodec.bindings.ray_serve:build_app model=taef2 max_replicas=4`` (:func:`build_app`),
- ``serve.run(deployment(ReplicaConfig(model="taef2"), max_replicas=4), route_prefix="/")`` in Python.
"""

from __future__ import annotations

import contextlib
import logging
import os
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field, fields

import ray
from ray import serve
from starlette.applications import Starlette

from latentcodec.bindings.http_limits import TOKEN_ENV, ServiceLimits
from latentcodec.bindings.http_service import Service, create_app
from latentcodec.engine.format import DEFAULT_MODEL
from latentcodec.engine.options import parse_bool

APP_NAME = "latentcodec"
_ENV_PREFIX = "LATENTCODEC_"  # passed to the replicas (weights folder, download permission)
HEALTH_CHECK_PERIOD_S = 2.0  # how soon Serve notices a dead replica and starts another (its default: 10 s)


@dataclass(frozen=True)
class ReplicaConfig:
    """What each replica builds: its codec (the CLI's global flags) and the service's limits."""

    model: str = DEFAULT_MODEL
    device: str | None = None
    batch_size: int = 8
    tile: int | None = None
    source: str | None = None
    max_latency_ms: float = 5.0
    limits: ServiceLimits = field(default_factory=ServiceLimits)


@serve.deployment(name="codec")
@serve.ingress()  # the app is built in the replica, by __serve_build_asgi_app__
class CodecReplica:
    """One replica: the service's app over a codec of its own."""

    def __init__(self, config: ReplicaConfig) -> None:
        self.config = config
        self.service: Service | None = None

    def __serve_build_asgi_app__(self) -> Starlette:
        from latentcodec.engine.codec import Codec

        config = self.config
        codec = Codec(
            config.model, device=config.device, batch_size=config.batch_size, tile=config.tile, source=config.source
        )
        app = create_app(codec, config.limits, max_latency_ms=config.max_latency_ms)
        self.service = app.state.service
        return app

    def check_health(self) -> None:
        """Serve's health check: a replica whose queue's worker stopped is replaced."""
        if self.service is not None and not self.service.queue.alive:
            raise RuntimeError("the codec queue's worker has stopped")


def deployment(
    config: ReplicaConfig, *, min_replicas: int | None = None, max_replicas: int | None = None
) -> serve.Application:
    """The service as a Serve application: replicas of ``config``, one GPU each where the cluster (or, before Ray
    is up, this machine) has GPUs and ``config.device`` allows, else one CPU each; between ``min_replicas`` and
    ``max_replicas`` (by default both: as many as there are GPUs, or CPUs). Equal bounds fix the count."""
    resources, room = _replica_resources(config.device)
    most = room if max_replicas is None else max_replicas
    least = most if min_replicas is None else min_replicas
    if not 0 <= least <= most or most < 1:
        raise ValueError(f"replica bounds must be 0 <= min <= max, max >= 1; got {least}..{most}")
    if least == most:
        scaling: dict = {"num_replicas": most}
    else:
        bounds = {"min_replicas": least, "max_replicas": most, "target_ongoing_requests": config.batch_size}
        scaling = {"autoscaling_config": bounds}
    env = {name: value for name, value in os.environ.items() if name.startswith(_ENV_PREFIX)}
    return CodecReplica.options(
        **scaling,
        max_ongoing_requests=2 * config.batch_size,
        max_queued_requests=config.limits.max_pending,
        health_check_period_s=HEALTH_CHECK_PERIOD_S,
        ray_actor_options={**resources, "runtime_env": {"env_vars": env}},
    ).bind(config)


def _replica_resources(device: str | None) -> tuple[dict, int]:
    """Each replica's resources and how many replicas they allow: a GPU each where there are GPUs and ``device``
    may use them, else a CPU each."""
    if ray.is_initialized():
        total = ray.cluster_resources()
        gpus, cpus = int(total.get("GPU", 0)), int(total.get("CPU", 1))
    else:  # `serve run` builds the app before it joins the cluster
        import torch

        gpus, cpus = torch.cuda.device_count(), os.cpu_count() or 1
    if gpus and (device is None or device.startswith("cuda")):
        return {"num_gpus": 1}, gpus
    return {"num_cpus": 1}, max(1, cpus)


def build_app(args: dict[str, str]) -> serve.Application:
    """``serve run latentcodec.bindings.ray_serve:build_app key=value ...``: any :class:`ReplicaConfig` or
    :class:`ServiceLimits` field, and ``min_replicas`` and ``max_replicas`` (:func:`deployment`); the token also
    from ``$LATENTCODEC_TOKEN``."""
    args = dict(args)
    bounds = {name: int(args.pop(name)) for name in ("min_replicas", "max_replicas") if name in args}
    limit_args = {name: _typed(ServiceLimits, name, args.pop(name)) for name in _names(ServiceLimits) & args.keys()}
    limit_args.setdefault("token", os.environ.get(TOKEN_ENV) or None)
    config_names = _names(ReplicaConfig) - {"limits"}
    if unknown := args.keys() - config_names:
        known = sorted(config_names | _names(ServiceLimits) | {"min_replicas", "max_replicas"})
        raise ValueError(f"unknown arguments {sorted(unknown)}; known: {', '.join(known)}")
    config_args = {name: _typed(ReplicaConfig, name, text) for name, text in args.items()}
    return deployment(ReplicaConfig(**config_args, limits=ServiceLimits(**limit_args)), **bounds)


def _names(cls: type) -> set[str]:
    return {f.name for f in fields(cls)}


def _typed(cls: type, name: str, text: str) -> object:
    """``text`` as the type the dataclass ``cls`` declares for its field ``name`` (``X | None``: an X)."""
    hint = typing.get_type_hints(cls)[name]
    kind = next(k for k in (typing.get_args(hint) or (hint,)) if k is not type(None))
    return parse_bool(text) if kind is bool else kind(text)


@contextlib.contextmanager
def deployed(
    config: ReplicaConfig,
    host: str,
    port: int,
    *,
    address: str | None = None,
    min_replicas: int | None = None,
    max_replicas: int | None = None,
    **init_args: object,
) -> Iterator[None]:
    """The service (:func:`deployment`) running on the Ray cluster at ``address`` ("auto": the running one;
    default: a local one started here, ``init_args`` going to ``ray.init``; none when Ray is up already), Serve's
    HTTP proxy on ``host:port``. On exit the app is deleted, its replicas answering what they hold (and a local
    cluster is shut down). Ray's and Serve's logs in this process stay quiet below warnings (Ray's: errors)."""
    connected = not ray.is_initialized()
    if connected:
        init_args = {"include_dashboard": False, "log_to_driver": False, **init_args}
        ray.init(address=address, logging_level=logging.ERROR, **init_args)
    logging.getLogger("ray.serve").setLevel(logging.WARNING)
    try:
        app = deployment(config, min_replicas=min_replicas, max_replicas=max_replicas)
        quiet = {"log_level": "WARNING"}
        serve.start(http_options={"host": host, "port": port}, logging_config=quiet)
        try:
            serve.run(app, name=APP_NAME, route_prefix="/", logging_config=quiet)
            yield
        finally:
            serve.delete(APP_NAME)  # replicas answer the requests they hold, then close their queues
    finally:
        if connected:
            ray.shutdown()
