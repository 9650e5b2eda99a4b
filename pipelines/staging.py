"""Run dates, outputs written aside, and committing them only when a run succeeds.

A scheduled job reruns dates: after a failure, a fix or a late input. So the batch job
never writes where readers look. Each output is written aside, next to its target, and
moved into place (*committed*) only once the run has succeeded; a rerun of a date replaces
what the earlier run committed instead of adding to it:

* **Files** (``FileOutput``): a prefix ``D/B`` writes shards ``D/B-00000-of-00003.jsonl``.
  The run writes them into ``D/_staging-B-<run id>/`` (the leading ``_`` hides it from
  Hive-style readers, and ``D/B-*`` globs do not reach into it). Committing deletes the
  shards of ``D/B`` an earlier run left and renames the new ones in, through Beam's
  ``FileSystems`` (a rename on local disks, copy-and-delete on ``gs://``).
* **BigQuery** (``TableOutput``): the run loads ``DATASET.TABLE_staging_<run id>`` in the
  target's dataset; committing is one copy job into the target with ``WRITE_TRUNCATE``
  (the whole table, or one partition for a ``TABLE$YYYYMMDD`` decorator), which BigQuery
  applies atomically, then the staging table is deleted.

A run that fails or is killed leaves its target untouched; a killed run leaves its staging
folder or table behind (delete them, or let a bucket lifecycle rule or table expiration do
it). Committing several files is not atomic on any filesystem: the job deletes the
target's manifest first and writes the new one last (``write_json``), so a reader that
waits for the manifest never reads a half-committed partition.

``{run_date}`` (``2024-05-01``) and ``{run_date_nodash}`` (``20240501``) in a path, table or
query are replaced by ``fill``; other braces are left alone.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import re
import secrets
from collections.abc import Mapping
from typing import Any

from apache_beam.io.filesystems import FileSystems

RUN_DATE = "{run_date}"
RUN_DATE_NODASH = "{run_date_nodash}"
STAGING = "_staging"
COPY_POLL_SECS = 1.0
COPY_TIMEOUT_SECS = 600.0


def parse_run_date(text: str | None, *, today: datetime.date | None = None) -> datetime.date:
    """``--run_date`` as a date; default: today in UTC.

    Raises:
        ValueError: ``text`` is not ``YYYY-MM-DD``.
    """
    if not text:
        return today or datetime.datetime.now(datetime.UTC).date()
    try:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            raise ValueError(text)
        return datetime.date.fromisoformat(text)
    except ValueError as e:
        raise ValueError(
            f"--run_date must be a date as YYYY-MM-DD; got {text!r}. Example: "
            "--run_date=2024-05-01 (Airflow: --run_date={{ ds }}).") from e


def fill(template: str | None, run_date: datetime.date) -> str | None:
    """``template`` with ``{run_date}`` and ``{run_date_nodash}`` replaced."""
    if template is None:
        return None
    return (template.replace(RUN_DATE, run_date.isoformat())
            .replace(RUN_DATE_NODASH, run_date.strftime("%Y%m%d")))


def new_run_id(now: datetime.datetime | None = None) -> str:
    """``20240501T031500Z_1a2b3c4d``: when the run started (UTC) and 8 random hex digits;
    letters, digits and ``_`` only, so it fits file and BigQuery table names."""
    now = now or datetime.datetime.now(datetime.UTC)
    return f"{now:%Y%m%dT%H%M%SZ}_{secrets.token_hex(4)}"


@dataclasses.dataclass(frozen=True)
class FileOutput:
    """Sharded files under an output prefix, written aside and committed by renames.

    Attributes:
        prefix: The target prefix ``D/B`` (absolute for local paths).
        suffix: The shards' suffix, e.g. ``.jsonl``.
        run_id: The run's id (``new_run_id``), naming its staging folder.
    """

    prefix: str
    suffix: str
    run_id: str

    @classmethod
    def at(cls, prefix: str, *, suffix: str, run_id: str) -> FileOutput:
        """Raises ValueError for a prefix that names a folder (ends with ``/``)."""
        if prefix.endswith("/"):
            raise ValueError(
                f"an output prefix names files, not a folder; got {prefix!r}. Add a file "
                f"name, e.g. {prefix}part (shards {prefix}part-00000-of-00001{suffix}).")
        directory, base = FileSystems.split(prefix)
        return cls(prefix=FileSystems.join(directory, base), suffix=suffix, run_id=run_id)

    @property
    def directory(self) -> str:
        return FileSystems.split(self.prefix)[0]

    @property
    def basename(self) -> str:
        return FileSystems.split(self.prefix)[1]

    @property
    def staging_dir(self) -> str:
        return FileSystems.join(self.directory, f"{STAGING}-{self.basename}-{self.run_id}")

    @property
    def staging_prefix(self) -> str:
        """Where the pipeline writes: the same file names, in the staging folder."""
        return FileSystems.join(self.staging_dir, self.basename)

    @property
    def pattern(self) -> str:
        """The glob of the committed shards, e.g. ``D/B-*-of-*.jsonl``."""
        return f"{self.prefix}-*-of-*{self.suffix}"

    def committed(self) -> list[str]:
        """The shards a run committed under the prefix (this one's or an earlier one's)."""
        return self._shards(self.directory)

    def staged(self) -> list[str]:
        return self._shards(self.staging_dir)

    def _shards(self, directory: str) -> list[str]:
        shard = re.compile(re.escape(self.basename) + r"-\d+-of-\d+" + re.escape(self.suffix))
        pattern = FileSystems.join(directory, f"{self.basename}-*-of-*{self.suffix}")
        try:
            found = FileSystems.match([pattern])[0].metadata_list
        except Exception:  # noqa: BLE001 - some filesystems raise when nothing matches
            return []
        return sorted(m.path for m in found
                      if shard.fullmatch(FileSystems.split(m.path)[1])
                      and FileSystems.split(m.path)[0].rstrip("/") == directory.rstrip("/"))

    def commit(self) -> list[str]:
        """Replaces the committed shards with the staged ones; returns the new shards.

        Raises:
            RuntimeError: the run staged no shard (nothing to commit).
        """
        staged = self.staged()
        if not staged:
            raise RuntimeError(
                f"the run staged no file under {self.staging_dir}; nothing to commit to "
                f"{self.pattern}. Was the staging folder deleted while the job ran?")
        targets = [FileSystems.join(self.directory, FileSystems.split(p)[1]) for p in staged]
        stale = sorted(set(self.committed()) - set(targets))
        if stale:
            FileSystems.delete(stale)
        FileSystems.rename(staged, targets)
        self.discard()
        return targets

    def discard(self) -> None:
        """Deletes the staging folder and what is in it, if it exists."""
        delete_tree(self.staging_dir)


def delete_tree(directory: str) -> None:
    """Deletes ``directory`` and everything below it, on any Beam filesystem, if present."""
    if FileSystems.get_scheme(directory) in (None, "file"):
        if FileSystems.exists(directory):
            FileSystems.delete([directory])
        return
    below = FileSystems.match([directory.rstrip("/") + "/**"])[0].metadata_list
    if below:
        FileSystems.delete([directory.rstrip("/") + "/"])


@dataclasses.dataclass(frozen=True)
class TableOutput:
    """A BigQuery table (or partition) loaded aside and committed by one copy job.

    Attributes:
        project, dataset, table: The target; ``table`` may end with a partition decorator
            (``scores$20240501``).
        run_id: The run's id, naming the staging table.
    """

    project: str
    dataset: str
    table: str
    run_id: str

    @classmethod
    def parse(cls, spec: str, *, project: str | None, run_id: str) -> TableOutput:
        """``PROJECT:DATASET.TABLE``, ``PROJECT.DATASET.TABLE`` or ``DATASET.TABLE``.

        Raises:
            ValueError: the name has another form, or no project is known.
        """
        match = re.fullmatch(r"(?:([\w.:-]+)[:.])?(\w+)\.(\w+(?:\$\w+)?)", spec)
        if not match:
            raise ValueError(
                f"--output_table must be PROJECT:DATASET.TABLE (or DATASET.TABLE, with an "
                f"optional partition TABLE$YYYYMMDD); got {spec!r}. Example: "
                "--output_table=my-project:scores.daily${run_date_nodash}")
        table_project = match.group(1) or project
        if not table_project:
            raise ValueError(
                f"--output_table={spec} names no project and --project is not set; write "
                f"PROJECT:{spec} or pass --project=PROJECT.")
        return cls(project=table_project, dataset=match.group(2), table=match.group(3),
                   run_id=run_id)

    @property
    def spec(self) -> str:
        return f"{self.project}:{self.dataset}.{self.table}"

    @property
    def staging_spec(self) -> str:
        """The table the pipeline loads: ``PROJECT:DATASET.TABLE_staging_<run id>``."""
        return f"{self.project}:{self.dataset}.{self._staging_name}"

    @property
    def _staging_name(self) -> str:
        return f"{self.table.split('$')[0]}{STAGING}_{self.run_id}"

    def commit(self, client: Any = None) -> None:
        """Copies the staging table over the target (``WRITE_TRUNCATE``), then deletes it.

        Raises:
            RuntimeError: the copy job failed or did not finish in ``COPY_TIMEOUT_SECS``.
        """
        from apache_beam.io.gcp.internal.clients import bigquery

        wrapper = client or _wrapper()
        job = wrapper._insert_copy_job(  # Beam's own copy step (WriteToBigQuery) calls it
            self.project, f"beam_infer_commit_{self.run_id}_{secrets.token_hex(2)}",
            bigquery.TableReference(projectId=self.project, datasetId=self.dataset,
                                    tableId=self._staging_name),
            bigquery.TableReference(projectId=self.project, datasetId=self.dataset,
                                    tableId=self.table),
            create_disposition="CREATE_IF_NEEDED", write_disposition="WRITE_TRUNCATE")
        try:
            wrapper.wait_for_bq_job(job, sleep_duration_sec=COPY_POLL_SECS,
                                    max_retries=int(COPY_TIMEOUT_SECS / COPY_POLL_SECS))
        except RuntimeError as e:
            raise RuntimeError(
                f"committing {self.staging_spec} to {self.spec} failed: {e}. The target is "
                "unchanged; the staging table is kept for a look.") from e
        self.discard(wrapper)

    def discard(self, client: Any = None) -> None:
        """Deletes the staging table if it exists."""
        # Beam's wrapper treats a missing table (404) as deleted.
        (client or _wrapper())._delete_table(self.project, self.dataset, self._staging_name)


def table_info(spec: str, *, project: str | None) -> tuple[list[str], int | None]:
    """The column names and row count of an existing BigQuery table, read when the
    pipeline is built.

    Raises:
        ValueError: the table cannot be read (missing, no access).
    """
    from apache_beam.io.gcp import bigquery_tools

    reference = bigquery_tools.parse_table_reference(spec, project=project)
    try:
        table = _wrapper().get_table(reference.projectId, reference.datasetId,
                                     reference.tableId)
    except Exception as e:  # apitools' HttpError and its transport errors
        raise ValueError(
            f"cannot read BigQuery table {spec!r} ({type(e).__name__}: "
            f"{str(e)[:300]}); check --input_table and the job's access to it.") from e
    columns = [field.name for field in (table.schema.fields if table.schema else [])]
    rows = int(table.numRows) if table.numRows is not None else None
    return columns, rows


def _wrapper() -> Any:
    from apache_beam.io.gcp import bigquery_tools

    return bigquery_tools.BigQueryWrapper()


def write_json(path: str, document: Mapping[str, Any]) -> None:
    """Writes ``document`` to ``path`` whole: into a temporary name beside it, then renamed,
    so a reader never sees half a file."""
    temporary = f"{path}.tmp-{secrets.token_hex(4)}"
    with FileSystems.create(temporary, mime_type="application/json") as f:
        f.write(json.dumps(document, indent=2, sort_keys=True).encode("utf-8") + b"\n")
    FileSystems.rename([temporary], [path])


def delete_if_present(path: str) -> None:
    if FileSystems.exists(path):
        FileSystems.delete([path])
