"""``ci-ml promote | rollback | verify`` and ``ci-ml registry list | history | keygen``."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ci_ml.attest.interface import CheckStatus
from ci_ml.attest.keys import configured_verifier, generate_keypair
from ci_ml.attest.verify import select_entries, verify_entry
from ci_ml.cli.common import STAGES, common_options
from ci_ml.config import load_config
from ci_ml.console import Reporter
from ci_ml.errors import BlockedError, UsageError
from ci_ml.fsutil import atomic_write_json
from ci_ml.registry.backends import open_registry
from ci_ml.registry.interface import RegistryError
from ci_ml.registry.promote import promote as promote_model
from ci_ml.registry.promote import rollback as rollback_stage


def _short(digest: str) -> str:
    return digest.removeprefix("sha256:")[:12]


def _parse_version(value: str | None) -> int | None:
    if value is None:
        return None
    text = value.strip().lower().removeprefix("v")
    if not text.isdigit() or int(text) < 1:
        raise UsageError(f"--version {value!r}: expected a version like 3 or v3")
    return int(text)


@click.command()
@click.option("--stage", type=STAGES, required=True, help="Stage to promote into.")
@click.option("--force", is_flag=True,
              help="Promote without a passing gate for this stage (needs --reason; recorded).")
@click.option("--reason", metavar="TEXT", help="Why; recorded in the history and attestation.")
@common_options
def promote(stage: str, force: bool, reason: str | None, config_path: Path | None,
            out_dir: Path, quiet: bool) -> None:
    """Promote the model in --out to a stage: needs a passing `ci-ml gate --stage S` there.

    Copies the model files into the registry (content-addressed), records the promotion in
    the stage's history and writes an in-toto attestation (signed if a key is configured).
    Writes promotion.json to --out. Exit 1 if the gate did not admit the model.
    """
    config = load_config(config_path)
    reporter = Reporter(quiet=quiet)
    result = promote_model(config, out_dir, stage, force=force, reason=reason,
                           reporter=reporter)
    e, v = result.entry, result.version
    if result.problems:
        reporter.warn(f"FORCED past the gate ({'; '.join(result.problems)}); reason recorded: "
                      f"{reason}")
    elif force:
        reporter.info("note: the gate admitted this model; --force was not needed")
    att = e.attestation
    signed = f"signed by {att.keyid}" if att and att.signed else "unsigned"
    atomic_write_json(out_dir / "promotion.json", {
        "stage": stage, "version": v.version, "digest": v.digest, "seq": e.seq,
        "previous": e.previous, "forced": e.forced, "registry": result.registry,
        "attestation": att.to_json() if att else None})
    prev = f" (was v{e.previous})" if e.previous else ""
    click.echo(f"promoted v{v.version} ({_short(v.digest)}) to {stage}{prev}; "
               f"attestation {att.path if att else '-'} ({signed})")


@click.command()
@click.option("--stage", type=STAGES, required=True, help="Stage to roll back.")
@click.option("--reason", metavar="TEXT", help="Why; recorded in the history.")
@common_options
def rollback(stage: str, reason: str | None, config_path: Path | None, out_dir: Path,
             quiet: bool) -> None:
    """Put the stage back on the version it held before its current one (exit 2 if none)."""
    config = load_config(config_path)
    entry = rollback_stage(config, stage, reason)
    click.echo(f"rolled back {stage}: v{entry.previous} -> v{entry.version}")


@click.command()
@click.option("--stage", type=STAGES, help="Verify the stage's current promotion.")
@click.option("--version", "version_text", metavar="V",
              help="Verify every promotion of version V (3 or v3).")
@click.option("--key", type=click.Path(path_type=Path), default=None,
              help="ed25519 public key (PEM) the attestations must be signed with.")
@common_options
def verify(stage: str | None, version_text: str | None, key: Path | None,
           config_path: Path | None, out_dir: Path, quiet: bool) -> None:
    """Check attestations: signature, and that stored model files match the attested digests.

    Default: the current promotion of every stage. Exit 1 if anything was tampered with.
    """
    if stage and version_text:
        raise UsageError("pass --stage or --version, not both")
    version = _parse_version(version_text)
    config = load_config(config_path)
    verifier = configured_verifier(config, key)
    registry = open_registry(config)
    try:
        state = registry.state()
    except RegistryError as exc:
        # An index that no longer parses is a verification failure, not a usage error.
        raise BlockedError(f"verification failed: {exc.message}") from exc
    entries = select_entries(state, stage, version)
    failed = []
    for entry in entries:
        result = verify_entry(registry, state, entry, verifier)
        click.echo(f"{result.target}: {'verified' if result.ok else 'FAILED'}")
        for check in result.checks:
            if not quiet or check.status is not CheckStatus.OK:
                click.echo(f"  [{check.status.value}] {check.name}: {check.detail}")
        if not result.ok:
            failed.append(f"{result.target}: {result.failures[0].detail}")
    if failed:
        raise BlockedError(f"verification failed: {failed[0]}"
                           + (f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""))


@click.group()
def registry() -> None:
    """Inspect the model registry, or make a signing key."""


@registry.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the registry index as JSON.")
@common_options
def registry_list(as_json: bool, config_path: Path | None, out_dir: Path, quiet: bool) -> None:
    """Versions, their stages and metrics."""
    reg = open_registry(load_config(config_path))
    state = reg.state()
    if as_json:
        click.echo(json.dumps(state.to_json(), indent=2))
        return
    if not state.versions:
        click.echo(f"registry {reg.location} is empty")
        return
    for n in sorted(state.versions):
        v = state.versions[n]
        stages = ", ".join(state.stages_of(n)) or "-"
        metrics = " ".join(f"{k}={val:.4f}" for k, val in list(v.metrics.items())[:3])
        click.echo(f"v{n}  {_short(v.digest)}  stages: {stages:<20} {v.created_at}  {metrics}")


@registry.command("history")
@click.option("--stage", type=STAGES, help="Only this stage.")
@common_options
def registry_history(stage: str | None, config_path: Path | None, out_dir: Path,
                     quiet: bool) -> None:
    """Every promotion and rollback, oldest first."""
    state = open_registry(load_config(config_path)).state()
    for e in state.history:
        if stage and e.stage != stage:
            continue
        prev = f" (was v{e.previous})" if e.previous else ""
        flags = []
        if e.forced:
            flags.append("FORCED")
        if e.attestation:
            flags.append("signed" if e.attestation.signed else "unsigned")
        reason = f": {e.reason}" if e.reason else ""
        tags = f" [{', '.join(flags)}]" if flags else ""
        click.echo(f"#{e.seq} {e.at} {e.action.value} {e.stage} v{e.version}{prev} "
                   f"by {e.user}{tags}{reason}")


@registry.command("keygen")
@click.argument("path", type=click.Path(path_type=Path))
@common_options
def registry_keygen(path: Path, config_path: Path | None, out_dir: Path, quiet: bool) -> None:
    """Write a new ed25519 signing key to PATH (mode 600) and its public key to PATH.pub."""
    public, keyid = generate_keypair(path)
    click.echo(f"wrote private key {path} (keep it secret) and public key {public}; "
               f"key id {keyid}")


COMMANDS = (promote, rollback, verify, registry)
