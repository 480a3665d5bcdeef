"""``ci-ml promote | rollback | verify`` and ``ci-ml registry list | history | keygen``."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ci_ml.attest.interface import CheckStatus, Verification
from ci_ml.attest.keys import generate_keypair
from ci_ml.attest.verify import select_entries, verify_entry, verify_history
from ci_ml.cli.common import STAGES, common_options
from ci_ml.config import load_config
from ci_ml.console import Reporter
from ci_ml.errors import BlockedError, UsageError
from ci_ml.fsutil import atomic_write_json
from ci_ml.registry.backends import open_registry
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

    Copies the model files into the registry (content-addressed) and appends the promotion
    to the registry's history as a signed in-toto statement linked to the event before.
    Writes promotion.json to --out. Exit 1 if the gate did not admit the model, or the
    registry's history fails verification.
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
    signed = (f"signed by {att.keyid}" if att and att.signed else
              "UNSIGNED: registry.signing is off")
    if not (att and att.signed):
        reporter.warn("the promotion is UNSIGNED (registry.signing: off): its record can be "
                      "rewritten without a trace")
    atomic_write_json(out_dir / "promotion.json", {
        "stage": stage, "version": v.version, "digest": v.digest, "seq": e.seq,
        "previous": e.previous, "forced": e.forced, "registry": result.registry,
        "signing": result.signing, "head": att.sha256 if att else None,
        "attestation": att.to_json() if att else None})
    prev = f" (was v{e.previous})" if e.previous else ""
    click.echo(f"promoted v{v.version} ({_short(v.digest)}) to {stage}{prev}; event "
               f"#{e.seq} {att.path if att else '-'} ({signed}); head "
               f"{att.sha256[:12] if att else '-'}")


@click.command()
@click.option("--stage", type=STAGES, required=True, help="Stage to roll back.")
@click.option("--reason", metavar="TEXT", help="Why; recorded in the history.")
@common_options
def rollback(stage: str, reason: str | None, config_path: Path | None, out_dir: Path,
             quiet: bool) -> None:
    """Put the stage back on the version it held before its current one (exit 2 if none)."""
    config = load_config(config_path)
    entry = rollback_stage(config, stage, reason)
    att = entry.attestation
    click.echo(f"rolled back {stage}: v{entry.previous} -> v{entry.version}; event #{entry.seq} "
               f"({'signed' if att and att.signed else 'UNSIGNED'}); head "
               f"{att.sha256[:12] if att else '-'}")


def _print(result: Verification, quiet: bool) -> None:
    click.echo(f"{result.target}: {'verified' if result.ok else 'FAILED'}")
    for check in result.checks:
        if not quiet or check.status is not CheckStatus.OK:
            click.echo(f"  [{check.status.value}] {check.name}: {check.detail}")


@click.command()
@click.option("--stage", type=STAGES, help="Check the files of the stage's current promotion.")
@click.option("--version", "version_text", metavar="V",
              help="Check the files of every promotion of version V (3 or v3).")
@click.option("--key", type=click.Path(path_type=Path), default=None,
              help="ed25519 public key (PEM) the history must be signed with.")
@click.option("--head", metavar="SHA256",
              help="A head the chain must still contain (printed by promote, in "
                   "promotion.json): catches events dropped from the end.")
@common_options
def verify(stage: str | None, version_text: str | None, key: Path | None, head: str | None,
           config_path: Path | None, out_dir: Path, quiet: bool) -> None:
    """Check the registry's whole history, then the files of what the stages hold.

    Every event, first to last: signed by the trusted key, linked to the event before,
    a move the history allows. Then the model files and evidence of the current promotion
    of every stage (or --stage, or --version) against their attested sha256.
    Exit 1 if anything was tampered with.
    """
    if stage and version_text:
        raise UsageError("pass --stage or --version, not both")
    version = _parse_version(version_text)
    config = load_config(config_path)
    registry = open_registry(config, key=key)
    history, state = verify_history(registry, head)
    _print(history, quiet)
    failed = [f"{history.target}: {c.detail}" for c in history.failures]
    if state is not None:
        for entry in select_entries(state, stage, version):
            result = verify_entry(registry, state, entry)
            _print(result, quiet)
            failed += [f"{result.target}: {c.detail}" for c in result.failures]
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
            flags.append("signed" if e.attestation.signed else "UNSIGNED")
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
