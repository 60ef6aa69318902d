"""`python -m kubewrit.operator`: run the operator (see `--help`; every flag has an env twin)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

import kopf
from kubewrit.operator import Config, handlers
from kubewrit.operator.config import (
    AdmissionConfig,
    LeaderConfig,
    RetentionConfig,
    default_identity,
    env,
    parse_duration,
)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m kubewrit.operator",
        description="kubewrit operator: AgentPolicy admission and status, ActionApproval "
        "approver stamping, retention of ActionRecords under leader election. "
        "Every flag defaults to the environment variable KUBEWRIT_OPERATOR_<NAME>.",
    )
    a = p.add_argument
    a(
        "--kubeconfig",
        default=env("KUBECONFIG") or None,
        help="kubeconfig file (default: in-cluster service account, else $KUBECONFIG)",
    )
    a(
        "--namespace",
        "-n",
        action="append",
        default=None,
        help="watch and retain only these namespaces (repeatable; env NAMESPACES, comma-separated;"
        " default: all)",
    )
    a(
        "--liveness",
        default=env("LIVENESS") or None,
        help="liveness endpoint, e.g. http://0.0.0.0:8080/healthz",
    )
    a("--verbose", "-v", action="store_true", default=env("VERBOSE") in ("1", "true"))
    g = p.add_argument_group("admission webhooks")
    g.add_argument(
        "--no-admission",
        action="store_true",
        default=env("ADMISSION") == "false",
        help="do not serve admission (another replica or deployment does)",
    )
    g.add_argument(
        "--webhook-listen",
        default=env("WEBHOOK_LISTEN", "0.0.0.0"),
        help="listen address (env WEBHOOK_LISTEN)",
    )
    g.add_argument(
        "--webhook-port",
        type=int,
        default=int(env("WEBHOOK_PORT", "9443")),
        help="listen port (env WEBHOOK_PORT; 0 picks a free one)",
    )
    g.add_argument(
        "--webhook-host",
        default=env("WEBHOOK_HOST") or None,
        help="host name/IP the API server uses (and the self-signed cert names)",
    )
    g.add_argument(
        "--webhook-url",
        default=env("WEBHOOK_URL") or None,
        help="full URL the API server should call, e.g. "
        "https://kubewrit-operator.kubewrit.svc:443 (overrides host:port)",
    )
    g.add_argument(
        "--webhook-service",
        default=env("WEBHOOK_SERVICE") or None,
        help="in a cluster: the Service the API server calls, namespace/name[:port]",
    )
    g.add_argument("--tls-cert", type=Path, default=env("TLS_CERT") or None)
    g.add_argument("--tls-key", type=Path, default=env("TLS_KEY") or None)
    g.add_argument(
        "--tls-ca",
        type=Path,
        default=env("TLS_CA") or None,
        help="CA bundle for the webhook configurations (default: the cert itself)",
    )
    g.add_argument(
        "--webhook-config-name",
        default=env("WEBHOOK_CONFIG_NAME", "kubewrit.io"),
        help="name of the managed Validating/MutatingWebhookConfiguration",
    )
    r = p.add_argument_group("retention (runs only in the elected leader)")
    r.add_argument(
        "--retention-max-age",
        default=env("RETENTION_MAX_AGE", ""),
        help="export and delete records older than this (e.g. 30d; empty: off)",
    )
    r.add_argument(
        "--retention-max-count",
        type=int,
        default=int(env("RETENTION_MAX_COUNT", "0") or 0),
        help="keep at most this many records per namespace (0: off)",
    )
    r.add_argument(
        "--retention-sink",
        type=Path,
        default=Path(env("RETENTION_SINK", "/var/lib/kubewrit/records.jsonl")),
        help="JSON Lines file exported records are appended to",
    )
    r.add_argument("--retention-interval", default=env("RETENTION_INTERVAL", "60s"))
    r.add_argument(
        "--home-namespace",
        default=env("HOME_NAMESPACE") or os.environ.get("POD_NAMESPACE") or "kubewrit-system",
        help="kubewrit's own namespace: where anchors, cuts and keys live",
    )
    r.add_argument(
        "--signing-key",
        type=Path,
        default=Path(env("SIGNING_KEY", "/var/run/kubewrit/operator-key.pem")),
        help="Ed25519 key that signs retention cuts (created if missing; its public key is "
        "published in kubewrit-keys in the home namespace)",
    )
    le = p.add_argument_group("leader election")
    le.add_argument("--lease-name", default=env("LEASE_NAME", "kubewrit-operator"))
    le.add_argument(
        "--lease-namespace",
        default=env("LEASE_NAMESPACE") or os.environ.get("POD_NAMESPACE") or "kubewrit-system",
    )
    le.add_argument("--lease-duration", default=env("LEASE_DURATION", "15s"))
    le.add_argument("--lease-renew-deadline", default=env("LEASE_RENEW_DEADLINE", "10s"))
    le.add_argument("--lease-retry-period", default=env("LEASE_RETRY_PERIOD", "2s"))
    le.add_argument(
        "--identity",
        default=env("IDENTITY") or default_identity(),
        help="this replica's name in the Lease (default: hostname-pid)",
    )
    return p


def config_from(args: argparse.Namespace) -> Config:
    namespaces = args.namespace or [n for n in env("NAMESPACES").split(",") if n.strip()]
    duration, deadline = (
        parse_duration(args.lease_duration),
        parse_duration(args.lease_renew_deadline),
    )
    if deadline >= duration:
        raise SystemExit("--lease-renew-deadline must be shorter than --lease-duration")
    return Config(
        kubeconfig=Path(args.kubeconfig) if args.kubeconfig else None,
        namespaces=tuple(n.strip() for n in namespaces),
        liveness=args.liveness,
        verbose=args.verbose,
        retention=RetentionConfig(
            max_age=parse_duration(args.retention_max_age),
            max_count=args.retention_max_count,
            sink=args.retention_sink,
            interval=parse_duration(args.retention_interval) or 60.0,
            home=args.home_namespace,
            signing_key=args.signing_key,
        ),
        leader=LeaderConfig(
            name=args.lease_name,
            namespace=args.lease_namespace,
            identity=args.identity,
            lease_duration=duration,
            renew_deadline=deadline,
            retry_period=parse_duration(args.lease_retry_period) or 2.0,
        ),
        admission=AdmissionConfig(
            enabled=not args.no_admission,
            listen_addr=args.webhook_listen,
            port=args.webhook_port,
            host=args.webhook_host,
            url=args.webhook_url,
            service=args.webhook_service,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            tls_ca=args.tls_ca,
            managed=args.webhook_config_name,
        ),
    )


def main(argv: list[str] | None = None) -> int:
    config = config_from(parser().parse_args(argv))
    if config.kubeconfig is not None:
        os.environ["KUBECONFIG"] = str(config.kubeconfig)  # kopf's own login reads it
    kopf.configure(verbose=config.verbose, log_prefix=False)
    logging.getLogger("kubewrit").setLevel(logging.DEBUG if config.verbose else logging.INFO)
    assert handlers  # imported for their registration side effect
    asyncio.run(
        kopf.operator(
            clusterwide=config.clusterwide,
            namespaces=list(config.namespaces),
            standalone=True,
            liveness_endpoint=config.liveness,
            memo=kopf.Memo(config=config),
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
