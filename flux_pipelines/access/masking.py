"""What each reader sees of classified columns: the SQL that masks or hashes them.

Contracts mark columns with ODCS ``classification`` (public | internal | restricted) and the
customProperty ``personalData``; ``contracts/access.yaml`` (``masking:``) gives a treatment
per classification and reader. This module turns both into a DuckDB select list, so every
copy Flux publishes applies the same rules:

- ``clear``: the value as curated.
- ``mask``: NULL of the column's own type (``CASE WHEN false THEN col END``): views over
  many days keep one type per column, and an aggregate over a masked column is NULL, never
  a plausible wrong figure.
- ``hash``: HMAC-SHA256 of the value's text under the deployment's key, as 64 hex digits
  (NULL stays NULL). The same value hashes the same in every copy, every day, every column
  and every agency, so analysts can still group, count distinct and join on it; without the
  key nobody can test a guessed name against it.

Readers: ``operator``, ``agency_analyst``, ``own_agency_personal`` (an agency analyst in its
agency's personal-data group) and ``cross_agency`` (the one shared copy every agency's
analysts read). A personal column gets the stricter of its classification's and personal
data's treatments (clear < hash < mask). A reader the policy does not name for a class gets
the ``agency_analyst`` treatment (``own_agency_personal`` is an agency analyst with one more
entitlement; the cross-agency copy is read by agency analysts); ``operator`` unnamed is
masked (fail closed).

Every copy records its treatments in the Parquet footer (key ``flux_masking``), so a builder
reading a copy (the cross-agency outputs) knows which columns it already holds hashed or
masked and never hashes a hash; a copy without the key is clear (written before masking).

The key: ``FLUX_PII_KEY`` (a deployment secret, at least 32 characters) when set, else a
random key generated once per Flux home in ``<home>/state/pii.key`` (mode 0600, outside
``published/``, so no analyst can read it). Every process of a deployment shares the home
(the agency files live there), so every copy hashes alike with no setup; an operator who
wants the key in a secret store sets ``FLUX_PII_KEY`` to the file's content. Changing the
key changes every hash: re-publish every day after a rotation.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import stat
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal, get_args

from flux_pipelines.access.policy import CLASSIFICATIONS, Masking, Treatment, default_policy
from flux_pipelines.contracts.model import Classification, ColumnSpec, Contract
from flux_pipelines.errors import ConfigurationError
from flux_pipelines.home import confined
from flux_pipelines.names import ENTITLED_FOLDER, published_root
from flux_pipelines.sql import literal, quote

if TYPE_CHECKING:
    import duckdb

Reader = Literal["operator", "agency_analyst", "own_agency_personal", "cross_agency"]
READERS: tuple[str, ...] = get_args(Reader)
PII_KEY_ENV = "FLUX_PII_KEY"
KEY_FILE = ("state", "pii.key")
MIN_KEY_CHARS = 32
# The Parquet footer key holding a copy's treatments ({column: treatment}, hidden ones only).
FOOTER_KEY = "flux_masking"
_STRICTNESS: dict[str, int] = {"clear": 0, "hash": 1, "mask": 2}
_IPAD, _OPAD = "flux_pii_ipad", "flux_pii_opad"
_BLOCK = 64  # SHA-256 block size (HMAC pads the key to it)

if set(get_args(Classification)) != set(CLASSIFICATIONS):  # pragma: no cover - a code error
    raise ConfigurationError("contracts/model.py and access/policy.py disagree on classifications")


def strictest(treatments: Iterable[Treatment]) -> Treatment:
    """The treatment that reveals least (clear < hash < mask)."""
    return max(treatments, key=_STRICTNESS.__getitem__, default="clear")


def _for(masking: Masking, kind: str, reader: Reader) -> Treatment:
    if reader == "cross_agency":
        named = masking.cross_agency.get(kind)
        return named if named is not None else _for(masking, kind, "agency_analyst")
    by_reader: dict[str, Treatment] = getattr(masking, kind)
    if reader in by_reader:
        return by_reader[reader]
    if reader == "own_agency_personal":
        return _for(masking, kind, "agency_analyst")
    return "mask"


def treatment(column: ColumnSpec, reader: Reader, masking: Masking | None = None) -> Treatment:
    """What ``reader`` sees of ``column``: the stricter of its classification's treatment
    and, for personal data, the personal treatment."""
    if reader not in READERS:
        raise ConfigurationError(f"unknown reader {reader!r}; one of {', '.join(READERS)}")
    policy = masking or default_policy().masking
    kinds = [column.classification, *(["personal"] if column.personal_data else [])]
    return strictest(_for(policy, kind, reader) for kind in kinds)


def treatments(
    columns: Iterable[ColumnSpec], reader: Reader, masking: Masking | None = None
) -> dict[str, Treatment]:
    """Column name -> treatment, for the columns ``reader`` does not see in clear."""
    out = {c.name: treatment(c, reader, masking) for c in columns}
    return {name: t for name, t in out.items() if t != "clear"}


def classified_columns(versions: Sequence[Contract]) -> tuple[ColumnSpec, ...]:
    """A dataset's columns over all its contract versions, each with its strictest marking:
    a stored table holds every version's columns, and a day keeps the protection any version
    gave a column (a column dropped later is still marked)."""
    merged: dict[str, ColumnSpec] = {}
    for contract in versions:
        for column in contract.columns:
            names = [column.name, *([column.renamed_from] if column.renamed_from else [])]
            for name in names:
                seen = merged.get(name)
                if seen is None:
                    merged[name] = column.model_copy(update={"name": name})
                    continue
                merged[name] = seen.model_copy(
                    update={
                        "classification": _stricter_class(
                            seen.classification, column.classification
                        ),
                        "personal_data": seen.personal_data or column.personal_data,
                    }
                )
    return tuple(merged.values())


def _stricter_class(a: Classification, b: Classification) -> Classification:
    return a if CLASSIFICATIONS.index(a) >= CLASSIFICATIONS.index(b) else b


def _key_pad(variable: str) -> str:
    # Fails the statement when bind_key was not called: a NULL pad would hash every value to
    # NULL, silently publishing a column of nothing.
    # (typed: an unset variable is an untyped NULL, which DuckDB folds away, error() and all)
    value = f"CAST(getvariable('{variable}') AS VARCHAR)"
    return (
        f"unhex(CASE WHEN {value} IS NULL THEN error('flux: the personal-data hashing key is "
        f"not bound (access.masking.bind_key)')::VARCHAR ELSE {value} END)"
    )


def hash_sql(expression: str) -> str:
    """HMAC-SHA256 (hex) of ``expression``'s text under the bound key; NULL stays NULL."""
    inner = f"sha256({_key_pad(_IPAD)} || encode(CAST({expression} AS VARCHAR)))"
    return (
        f"CASE WHEN {expression} IS NULL THEN NULL ELSE "
        f"sha256({_key_pad(_OPAD)} || unhex({inner})) END"
    )


def _apply(name: str, wanted: Treatment, held: Treatment) -> str:
    column = quote(name)
    final = strictest([wanted, held])
    if final == held:  # the source already holds it this way (or stricter)
        return column
    if final == "mask":
        return f"CASE WHEN false THEN {column} END AS {column}"
    return f"{hash_sql(column)} AS {column}"


def select_list(
    names: Sequence[str],
    wanted: Mapping[str, Treatment],
    held: Mapping[str, Treatment] | None = None,
) -> str:
    """The select list over a table's columns ``names`` (in order) that gives a reader
    ``wanted`` (name -> treatment; absent: clear) from a source holding its columns as
    ``held`` says (absent: clear). A column held stricter than wanted stays as held: a hash
    cannot be undone, and is never hashed twice."""
    held = held or {}
    return ", ".join(_apply(n, wanted.get(n, "clear"), held.get(n, "clear")) for n in names) or "*"


def masked_select(
    columns: Sequence[ColumnSpec], reader: Reader, names: Sequence[str] | None = None
) -> str:
    """The select list giving ``reader`` its view of a table with the contract's ``columns``
    (``names``: the table's actual columns, lineage included; default the contract's)."""
    return select_list(names or [c.name for c in columns], treatments(columns, reader))


def footer(held: Mapping[str, Treatment]) -> str:
    """The COPY option recording a copy's treatments in its Parquet footer."""
    text = json.dumps(dict(sorted(held.items())), separators=(",", ":"))
    return f"KV_METADATA {{{FOOTER_KEY}: {literal(text)}}}"


def held_by(
    conn: duckdb.DuckDBPyConnection, paths: Sequence[Path]
) -> dict[Path, dict[str, Treatment]]:
    """The treatments each published copy holds (its footer; none recorded: clear), read
    in one statement for all of them."""
    if not paths:
        return {}
    listed = ", ".join(literal(p) for p in paths)
    rows = conn.execute(
        f"SELECT file_name, value FROM parquet_kv_metadata([{listed}]) WHERE key = ?",
        [FOOTER_KEY.encode()],
    ).fetchall()
    found = {str(name): json.loads(bytes(value).decode()) for name, value in rows}
    return {
        p: {str(k): v for k, v in found.get(str(p), {}).items() if v in _STRICTNESS} for p in paths
    }


# --- the key --------------------------------------------------------------------------------
def pii_key(home: Path, environ: Mapping[str, str] | None = None) -> bytes:
    """The deployment's hashing key: ``FLUX_PII_KEY``, else ``<home>/state/pii.key`` (made
    once, 0600). A short environment key or a key file others can read is refused."""
    env = os.environ if environ is None else environ
    given = env.get(PII_KEY_ENV, "").strip()
    if given:
        if len(given) < MIN_KEY_CHARS:
            raise ConfigurationError(
                f"{PII_KEY_ENV} has {len(given)} characters; give at least {MIN_KEY_CHARS} "
                "random characters (`python -c 'import secrets; print(secrets.token_hex(32))'`) "
                "or unset it to use the key Flux keeps in <home>/state/pii.key"
            )
        return given.encode()
    path = confined(home, *KEY_FILE)
    if not path.exists():
        _create_key(path)
    info = os.lstat(path)
    if not stat.S_ISREG(info.st_mode) or info.st_mode & 0o077:
        raise ConfigurationError(
            f"{path}: the personal-data hashing key must be a regular file readable by its "
            f"owner only (mode {stat.filemode(info.st_mode)}); run `chmod 600 {path}`"
        )
    text = path.read_text(encoding="ascii").strip()
    if len(text) < MIN_KEY_CHARS:
        raise ConfigurationError(f"{path}: the hashing key is shorter than {MIN_KEY_CHARS} chars")
    return text.encode()


def _create_key(path: Path) -> None:
    """Write a random key once; concurrent first runs agree on the first one linked."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as out:
            out.write(secrets.token_hex(32) + "\n")
            out.flush()
            os.fsync(out.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)  # atomic create-if-absent: the loser reads the winner's key
    finally:
        tmp.unlink(missing_ok=True)


def bind_key(conn: duckdb.DuckDBPyConnection, home: Path) -> None:
    """Make ``hash_sql`` usable on ``conn``: the key's HMAC pads as session variables, so the
    key never appears in a statement's text (errors and logs quote statements)."""
    key = pii_key(home)
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    padded = key.ljust(_BLOCK, b"\0")
    conn.execute(f"SET VARIABLE {_IPAD} = ?", [bytes(b ^ 0x36 for b in padded).hex()])
    conn.execute(f"SET VARIABLE {_OPAD} = ?", [bytes(b ^ 0x5C for b in padded).hex()])


# --- where the copies live -------------------------------------------------------------------
def entitled_file(home: Path, agency: str, dataset: str, day: str) -> Path:
    """``published/<agency>/_clear/<dataset>/<day>.parquet``: the personal-data group's copy."""
    return confined(published_root(home), agency, ENTITLED_FOLDER, dataset, f"{day}.parquet")


def source_file(home: Path, agency: str, dataset: str, day: str) -> Path:
    """The clearest published copy of a day for Flux's own builders (cross-agency outputs,
    recipient links): the entitled copy when there is one, else the analysts' copy."""
    entitled = entitled_file(home, agency, dataset, day)
    if entitled.is_file():
        return entitled
    return confined(published_root(home), agency, dataset, f"{day}.parquet")


# --- the cross-agency copy -------------------------------------------------------------
# published/<agency>/<dataset>/<day>.parquet or published/<agency>/_clear/<dataset>/<day>...
_AGENCY_OF_FILE = (
    f"CASE WHEN split_part(filename, '/', -3) = '{ENTITLED_FOLDER}' "
    "THEN split_part(filename, '/', -4) ELSE split_part(filename, '/', -3) END"
)


def shared_select(
    conn: duckdb.DuckDBPyConnection, home: Path, files: list[Path], wanted: dict[str, Treatment]
) -> str:
    """Every file's rows with an ``agency`` column, as the cross-agency copy shows them:
    ``wanted`` applied to what each copy holds (its footer), one part per kind of copy."""
    by_held: dict[tuple[tuple[str, Treatment], ...], list[Path]] = {}
    for path, held in held_by(conn, files).items():
        by_held.setdefault(tuple(sorted(held.items())), []).append(path)
    if any(t == "hash" for t in wanted.values()):
        bind_key(conn, home)
    parts = []
    for kinds, group in by_held.items():
        listed = ", ".join(literal(f) for f in group)
        source = f"read_parquet([{listed}], union_by_name = true, filename = true)"
        names = [n for (n, *_) in conn.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()]
        kept = [n for n in names if n != "filename"]
        parts.append(
            f"SELECT {_AGENCY_OF_FILE} AS agency, {select_list(kept, wanted, dict(kinds))} "
            f"FROM {source}"
        )
    return " UNION ALL BY NAME ".join(parts)
