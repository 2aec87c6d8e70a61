"""``privaudit guard``: serve the guard, and manage its API keys.

    privaudit guard --config guard.yaml [--host H] [--port P]
    privaudit guard add-key alice --tier pro --config guard.yaml
    privaudit guard revoke-key alice --config guard.yaml

Registered in the main CLI as ``app.add_typer(guard_app, name="guard")``; user errors are raised as
PrivauditError and become one line and exit code 2 there.
"""

from __future__ import annotations

import gc
import logging
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Annotated, Optional

import typer

from privaudit.errors import ConfigError, PrivauditError
from privaudit.guard.config import load_config

guard_app = typer.Typer(add_completion=False, pretty_exceptions_enable=False,
                        help="The inference guard: a reverse proxy that authenticates, rate-limits, hardens and monitors model queries.")
log = logging.getLogger("privaudit.guard")

ConfigOption = Annotated[Optional[Path], typer.Option("--config", "-c", help="The guard's YAML configuration (see docs/guard.md).")]


def _keys_file(keys_file: Optional[Path], config: Optional[Path]) -> Path:
    if keys_file is not None:
        return keys_file
    if config is None:
        raise ConfigError("name the API keys file with --keys-file, or the guard configuration with --config")
    keys = load_config(config).identity.api_keys
    if keys is None:
        raise ConfigError(f"{config}: identity.api_keys: is not configured, so there is no keys file; add identity.api_keys.file")
    return keys.file


def serve(config_path: Path, host: Optional[str] = None, port: Optional[int] = None, log_level: str = "info") -> None:
    """Run the proxy until SIGINT/SIGTERM; SIGHUP re-reads the configuration, keys and JWKS."""
    import uvicorn

    from privaudit.guard.app import build_app

    from privaudit.guard.server import http_protocol, install_redaction, serve_metrics

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    install_redaction()
    cfg = load_config(config_path)
    app = build_app(cfg)
    guard = app.state.guard
    metrics_address = cfg.metrics.address()
    metrics_server = None
    if metrics_address is not None:
        try:
            metrics_server = serve_metrics(guard.registry, metrics_address)
        except OSError as exc:
            raise ConfigError(f"{config_path}: metrics.listen: cannot listen on {cfg.metrics.listen}: "
                              f"{exc.strerror or exc}; choose another host:port, or null for no metrics") from None
    # Python's default thread switch interval (5 ms) is kept: monitoring runs in a process of its own, and
    # the guard's threads (metrics, the monitoring pipe's reader) do a few microseconds of work per wake-up
    # and block again; a shorter interval only made them take the interpreter from the event loop sooner.
    # Everything imported and built so far lives as long as the process: move it out of the garbage
    # collector's way, so a full collection walks only what requests created (a pause of about a
    # hundred milliseconds on a busy two-core host otherwise, at every full collection).
    gc.collect()
    gc.freeze()

    def on_hup(signum: int, frame: Optional[FrameType]) -> None:
        # reload() builds everything first and swaps it in with one assignment, so running it between
        # two steps of the event loop is safe; a broken file keeps the running configuration.
        try:
            guard.reload()
            log.warning("reloaded %s", config_path)
        except PrivauditError as exc:
            log.error("reload failed, still running the previous configuration: %s", exc)

    has_hup = hasattr(signal, "SIGHUP")
    previous = signal.signal(signal.SIGHUP, on_hup) if has_hup else None
    try:
        # proxy_headers off: uvicorn would otherwise replace the peer address with X-Forwarded-For
        # itself; the guard decides which proxies to believe (identity.trusted_proxies).
        # SIGTERM makes uvicorn drain requests and run the lifespan shutdown, which closes the
        # monitor (flushing its log) before the process exits.
        # Access logs off: one line per request costs the event loop more than the rest of the guard's work.
        uvicorn_config = uvicorn.Config(app, host=host or cfg.listen.host, port=cfg.listen.port if port is None else port,
                                        log_level=log_level, lifespan="on", proxy_headers=False, server_header=False,
                                        http=http_protocol(cfg.client_timeouts.header_seconds), access_log=False,
                                        timeout_keep_alive=5, h11_max_incomplete_event_size=64 * 1024)
        server = uvicorn.Server(uvicorn_config)
        install_redaction()
        server.run()
    finally:
        if metrics_server is not None:
            metrics_server.shutdown()
        if has_hup:
            signal.signal(signal.SIGHUP, previous)


@guard_app.callback(invoke_without_command=True)
def guard(
    ctx: typer.Context,
    config: ConfigOption = None,
    host: Annotated[Optional[str], typer.Option(help="Address to listen on (default: listen.host).")] = None,
    port: Annotated[Optional[int], typer.Option(help="Port to listen on (default: listen.port).")] = None,
    log_level: Annotated[str, typer.Option("--log-level", help="debug, info, warning or error.")] = "info",
) -> None:
    """Serve the guard in front of the configured upstream model endpoint."""
    if ctx.invoked_subcommand is not None:
        return
    if config is None:
        raise ConfigError("privaudit guard: pass --config guard.yaml (see docs/guard.md)")
    if log_level not in ("debug", "info", "warning", "error"):
        raise ConfigError(f"--log-level {log_level!r}: use debug, info, warning or error")
    serve(config, host, port, log_level)


@guard_app.command("add-key")
def add_key_command(
    key_id: Annotated[str, typer.Argument(help="The key's id (letters, digits, '-' or '_'); it names the principal.")],
    tier: Annotated[str, typer.Option(help="The tier the key belongs to (limits.tiers / hardening.tiers).")] = "default",
    keys_file: Annotated[Optional[Path], typer.Option("--keys-file", help="The API keys file (default: identity.api_keys.file of --config).")] = None,
    config: ConfigOption = None,
) -> None:
    """Create an API key and print it once; only its HMAC is stored."""
    from privaudit.guard.identity import add_key

    path = _keys_file(keys_file, config)
    secret = add_key(path, key_id, tier)
    typer.echo(f"{key_id}.{secret}")
    print(f"added key {key_id} (tier {tier}) to {path}; the key above is shown only once, give it to its holder "
          "as the X-API-Key header. A running guard picks it up on SIGHUP.", file=sys.stderr)


@guard_app.command("revoke-key")
def revoke_key_command(
    key_id: Annotated[str, typer.Argument(help="The id of the key to revoke.")],
    keys_file: Annotated[Optional[Path], typer.Option("--keys-file", help="The API keys file (default: identity.api_keys.file of --config).")] = None,
    config: ConfigOption = None,
) -> None:
    """Revoke an API key; a running guard refuses it after SIGHUP (kill -HUP <pid>)."""
    from privaudit.guard.identity import revoke_key

    path = _keys_file(keys_file, config)
    revoke_key(path, key_id)
    print(f"revoked key {key_id} in {path}; send SIGHUP to the running guard to apply it now", file=sys.stderr)
