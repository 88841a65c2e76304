"""A readable contract page (Markdown): what an agency and an engineer need on one page."""

from __future__ import annotations

from flux_pipelines.contracts.ddl import ddl_script
from flux_pipelines.contracts.model import Contract


def contract_page(contract: Contract) -> str:
    lines = [
        f"# {contract.title} — `{contract.dataset}` {contract.version}",
        "",
        contract.description,
        "",
        f"- contract id: `{contract.id}` ({contract.status}), domain `{contract.domain}`",
        f"- in force for deliveries from {contract.effective_from}",
        f"- row identifier: {', '.join(contract.identifier) or 'file row number'}",
        f"- null spellings: {', '.join(repr(v) for v in contract.null_values)}",
        f"- source: `{contract.source_path}`",
        "",
        "## Columns",
        "",
        "| column | type | required | unit | description |",
        "|---|---|---|---|---|",
    ]
    for c in contract.columns:
        desc = c.description.replace("\n", " ").replace("|", "\\|")
        lines.append(
            f"| `{c.name}` | {c.logical_type} | {'yes' if c.required else ''} | "
            f"{c.unit or ''} | {desc} |"
        )
    lines += [
        "",
        f"## Rules ({len(contract.rules)})",
        "",
        "| rule id | severity | category | message | expected |",
        "|---|---|---|---|---|",
    ]
    for r in contract.rules:
        expected = r.expected.replace("|", "\\|")
        if len(expected) > 120:
            expected = expected[:117] + "..."
        lines.append(
            f"| `{r.id}` | {r.severity} | {r.category} | {r.message.replace('|', '/')} | "
            f"{expected} |"
        )
    enums = [c for c in contract.columns if c.allowed_values]
    if enums:
        lines += ["", "## Allowed values", ""]
        for c in enums:
            lines.append(f"- `{c.name}`: " + ", ".join(f"`{v.value}`" for v in c.allowed_values))
    lines += ["", "## DuckDB tables", "", "```sql", ddl_script(contract) + ";", "```", ""]
    return "\n".join(lines)
