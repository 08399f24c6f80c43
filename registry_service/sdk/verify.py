"""``registry-service versions verify``: check a version's files against its signed
manifest on this machine, with the public key, so that a copy exported from the
registry can be checked without trusting the service that serves it."""

from __future__ import annotations

import tempfile
from pathlib import Path

import click

from registry_service.config import Settings
from registry_service.sdk.client import RegistryClient
from registry_service.sdk.commands import EXIT_NOT_EXECUTED, client_command, emit
from registry_service.services.manifests import ManifestError, verify_folder


def _download(name: str, version: int, into: str, tracking_uri: str) -> Path:
    """The version's files as MLflow's artifact store holds them (where its source
    points, not the ``models:/`` view, which adds a file of its own)."""
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        uri = client.get_model_version_download_uri(name, str(version))
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=uri, dst_path=into, tracking_uri=tracking_uri
        )
    except (MlflowException, OSError) as exc:
        raise click.ClickException(
            f"could not download version {version} of {name!r} from {tracking_uri}: "
            f"{str(exc)[:300]} (give --tracking-uri, or --dir with an exported copy)"
        ) from None
    return Path(local)


@client_command(None, "verify")
@click.argument("name")
@click.argument("version", type=int)
@click.option(
    "--dir",
    "folder",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Check this folder (an exported copy) instead of downloading from MLflow.",
)
@click.option(
    "--public-key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Trust this PEM public key, not the one the service sends.",
)
@click.option(
    "--tracking-uri",
    envvar="MLFLOW_TRACKING_URI",
    help="MLflow to download the files from (or MLFLOW_TRACKING_URI); by default the "
    "embedded store `make run` keeps under REGISTRY_DATA_DIR (./.registry).",
)
def versions_verify(
    client: RegistryClient,
    as_json: bool,
    name: str,
    version: int,
    folder: Path | None,
    public_key: Path | None,
    tracking_uri: str | None,
) -> int:
    """Check a version's files against its signed manifest, here; exit 4 if they differ."""
    signed = client.manifest(name, version)
    key = public_key.read_bytes() if public_key else signed["public_key"].encode()
    with tempfile.TemporaryDirectory(prefix="registry-verify-") as tmp:
        uri = tracking_uri or Settings.from_env().mlflow_tracking_uri
        local = folder or _download(name, version, tmp, uri)
        try:
            result = verify_folder(local, signed["signature"], key)
        except ManifestError as exc:
            raise click.ClickException(str(exc)) from exc
    body = {"model_name": name, "version": version, **result.as_dict()}

    def render(r: dict) -> None:
        if r["ok"]:
            click.echo(
                f"ok: {name} v{version} matches its signed manifest {r['manifest_digest']} "
                f"({len(signed['files'])} files)"
            )
            return
        click.echo(f"MISMATCH: {name} v{version}: signature {r['signature']}")
        if r["detail"]:
            click.echo(f"  {r['detail']}")
        for m in r["mismatches"]:
            click.echo(f"  {m['path']}: {m['problem']}")

    emit(body, as_json, render)
    return 0 if result.ok else EXIT_NOT_EXECUTED
