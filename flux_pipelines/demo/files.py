"""Writing deliveries as agencies send them: CSV (BOM, CRLF), JSONL, JSON, Parquet.

Why: the pipeline must read every format agencies use, so the demo writes them all with
values kept as text; a big CSV is streamed chunk by chunk so its size is not bounded by
memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import polars as pl

from flux_pipelines.contracts.model import Contract
from flux_pipelines.demo.delivery import PLANTED_SCHEMA, delivered_headers
from flux_pipelines.demo.draws import Rng
from flux_pipelines.demo.oracle import answer
from flux_pipelines.demo.plan import compile_plan
from flux_pipelines.demo.rows import generate_chunk

Format = Literal["csv", "jsonl", "json", "parquet"]


def write_delivery(
    frame: pl.DataFrame,
    path: Path,
    fmt: Format | None = None,
    *,
    bom: bool = False,
    crlf: bool = False,
) -> Path:
    """Write a delivery as an agency would: CSV (optionally BOM + CRLF), JSONL, JSON, Parquet.

    ``fmt`` defaults to the file's suffix. Values stay text in every format.
    """
    fmt = fmt or _format_of(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    match fmt:
        case "csv":
            terminator = "\r\n" if crlf else "\n"
            frame.write_csv(
                path, include_bom=bom, line_terminator=terminator, quote_style="necessary"
            )
        case "jsonl":
            frame.write_ndjson(path)
        case "json":
            frame.write_json(path)
        case "parquet":
            frame.write_parquet(path)
        case _:
            raise ValueError(f"unknown delivery format {fmt!r}")
    return path


def _format_of(path: Path) -> Format:
    suffix = path.suffix.lower().lstrip(".")
    formats: dict[str, Format] = {
        "csv": "csv", "jsonl": "jsonl", "ndjson": "jsonl", "json": "json", "parquet": "parquet",
    }  # fmt: skip
    if suffix not in formats:
        raise ValueError(f"cannot tell the delivery format of {path}")
    return formats[suffix]


def write_large_csv(
    contract: Contract,
    path: Path,
    n_rows: int,
    *,
    seed: int,
    chunk_rows: int = 500_000,
    defect_rate: float = 0.02,
    bom: bool = False,
    crlf: bool = False,
    source_headers: bool = True,
) -> pl.DataFrame:
    """Stream a big CSV chunk by chunk (memory bounded by ``chunk_rows``); return what was planted.

    Row numbers run on across chunks and keys come from the global row index, so the file is
    one delivery: unique across chunks, duplicates only where planted (within a chunk).
    """
    plan = compile_plan(contract, seed, n_rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    planted = [pl.DataFrame(schema=PLANTED_SCHEMA)]
    seen: dict[str, set[str]] = {}  # defect values already used in key columns
    terminator = "\r\n" if crlf else "\n"
    with path.open("wb") as handle:
        if n_rows == 0:
            header = delivered_headers(contract, source_headers).values()
            pl.DataFrame(schema=dict.fromkeys(header, pl.String)).write_csv(
                handle, include_bom=bom, line_terminator=terminator
            )
        for number, offset in enumerate(range(0, n_rows, chunk_rows)):
            size = min(chunk_rows, n_rows - offset)
            rng = Rng(f"{seed}:chunk:{number}")
            steps = generate_chunk(plan, size, offset, rng, defect_rate, source_headers, seen)
            chunk = answer(plan.validator, steps)
            chunk.frame.write_csv(
                handle,
                include_bom=bom and offset == 0,
                include_header=offset == 0,
                line_terminator=terminator,
                quote_style="necessary",
            )
            planted.append(chunk.planted)
    return pl.concat(planted, how="vertical")
