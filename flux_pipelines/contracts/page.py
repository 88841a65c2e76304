"""A readable contract page (Markdown): what an agency and an engineer need on one page."""

from __future__ import annotations

from flux_pipelines.contracts.ddl import ddl_script
from flux_pipelines.contracts.memo import per_contract
from flux_pipelines.contracts.model import Contract


@per_contract
def rule_catalogue_markdown(contract: Contract) -> str:
    """Every rule with its stable id, scope, severity and category (an override is marked)."""
    lines = [
        "| rule id | scope | severity | category | message | expected |",
        "|---|---|---|---|---|---|",
    ]
    for r in contract.catalogue():
        expected = r.expected.replace("|", "\\|").replace("\n", " ")
        if len(expected) > 120:
            expected = expected[:117] + "..."
        severity: str = r.severity
        if r.default_severity != r.severity:
            severity = f"{r.severity} (agency override; contract: {r.default_severity})"
        lines.append(
            f"| `{r.id}` | {r.scope} | {severity} | {r.category} | "
            f"{r.message.replace('|', '/')} | {expected} |"
        )
    return "\n".join(lines)


def contract_page(contract: Contract, overrides: dict[str, dict[str, str]] | None = None) -> str:
    """The contract page; ``overrides`` lists agencies' severity overrides (agency -> rules)."""
    overrides = overrides or {}
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
        "Classification and personal data decide what analysts see of a column in published "
        "copies (masked or hashed unless entitled; `contracts/access.yaml`).",
        "",
        "| column | type | required | unit | classification | personal data | description |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in contract.columns:
        desc = c.description.replace("\n", " ").replace("|", "\\|")
        if c.renamed_from:
            desc += f" (renamed from `{c.renamed_from}`)"
        lines.append(
            f"| `{c.name}` | {c.logical_type} | {'yes' if c.required else ''} | "
            f"{c.unit or ''} | {c.classification} | {'yes' if c.personal_data else ''} | "
            f"{desc} |"
        )
    lines += rights_and_content_markdown(contract)
    catalogue = contract.catalogue()
    lines += [
        "",
        f"## Rule catalogue ({len(catalogue)} rules)",
        "",
        rule_catalogue_markdown(contract),
    ]
    if overrides:
        lines += ["", "### Agency severity overrides", ""]
        lines += [
            f"- `{agency}`: " + ", ".join(f"`{rid}` -> {sev}" for rid, sev in sorted(o.items()))
            for agency, o in sorted(overrides.items())
        ]
    if contract.cross_rules:
        lines += ["", "### Cross-dataset rule queries", ""]
        for r in contract.cross_rules:
            lines += [f"`{r.id}` ({r.kind}, reads {', '.join(r.datasets)}):", "", "```sql"]
            lines += [r.query, "```", ""]
    enums = [c for c in contract.columns if c.allowed_values]
    if enums:
        lines += ["", "## Allowed values", ""]
        for c in enums:
            lines.append(f"- `{c.name}`: " + ", ".join(f"`{v.value}`" for v in c.allowed_values))
    lines += ["", "## DuckDB tables", "", "```sql", ddl_script(contract) + ";", "```", ""]
    return "\n".join(lines)


def rights_and_content_markdown(contract: Contract) -> list[str]:
    """The section saying where a record's rights and content are stated (none: nothing)."""
    mapping = contract.content
    if mapping is None:
        return []

    def column(name: str | None) -> str:
        return f"column `{name}`" if name else "not stated (no record is eligible on it)"

    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    if mapping.content_type is not None:
        kind = f"`{mapping.content_type}` for every record"
    elif mapping.content_type_column:
        kind = column(mapping.content_type_column)
        if mapping.content_types:
            kind += " mapped: " + ", ".join(
                f"`{cell(value)}` -> {target}" for value, target in mapping.content_types.items()
            )
    else:
        kind = "not stated"
    licence = (
        f"`{cell(mapping.metadata_licence)}` for every record"
        if mapping.metadata_licence
        else column(mapping.metadata_licence_column)
    )
    files = ", ".join(f"`{c}`" for c in mapping.content_file_columns) or "none"
    return [
        "",
        "## Rights and content",
        "",
        "Which records may be used for what (`contracts/use_cases.yaml`) is decided from "
        "these; a record without a rights statement is eligible for no use case.",
        "",
        "| what | where |",
        "|---|---|",
        f"| content rights statement | {column(mapping.rights_column)} |",
        f"| metadata licence | {licence} |",
        f"| content type / object kind | {kind} |",
        f"| content files | {files} |",
    ]
