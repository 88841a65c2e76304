"""The agency registry and the contract catalogue, read from ``contracts/``.

Layout::

    contracts/agencies.yaml                          who delivers what
    contracts/datasets/<dataset>/<version>.odcs.yaml one file per dataset version

A bad entry is a ConfigurationError when definitions load, naming the file to fix.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from flux_pipelines.contracts.cross_rules import check_cross_queries, check_cross_rules
from flux_pipelines.contracts.loader import SAFE_LOADER, load_contract
from flux_pipelines.contracts.model import Contract, Severity
from flux_pipelines.errors import ConfigurationError
from flux_pipelines.home import PROJECT_ROOT
from flux_pipelines.slugs import check_slug, dagster_name

CONTRACTS_DIR_ENV = "FLUX_CONTRACTS_DIR"


class Agency(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    id: str
    name: str
    datasets: tuple[str, ...]
    owner: str = ""
    source_names: tuple[str, ...] = ()
    # When each day's delivery is due (cron, UTC); freshness is judged against it, and a day
    # on which the cron does not fire expects no delivery.
    delivery_deadline: str = "0 9 * * *"
    # The first day the agency delivers: its partitions start here, so the UI shows no
    # "missing" days from before it was onboarded.
    onboarded: dt.date = dt.date(2020, 1, 1)
    # dataset -> rule id -> fatal | warning: the agency's own significance for a rule, as the
    # Broker lets each agency set it. Applied to every version of the dataset's contract.
    severity_overrides: dict[str, dict[str, Severity]] = {}

    @field_validator("delivery_deadline")
    @classmethod
    def _deadline_is_cron(cls, v: str) -> str:
        from flux_pipelines.cron import is_valid_cron

        if not is_valid_cron(v):
            raise ValueError(f"delivery_deadline {v!r} is not a cron expression (e.g. '0 9 * * *')")
        return v

    @field_validator("id")
    @classmethod
    def _id_is_slug(cls, v: str) -> str:
        return check_slug(v, "agency id")

    @field_validator("datasets")
    @classmethod
    def _datasets_are_slugs(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(check_slug(d, "dataset id") for d in v)

    @property
    def key(self) -> str:
        """The agency as a Dagster name (asset key prefix, group, pool)."""
        return dagster_name(self.id)


class Registry(BaseModel):
    """Agencies and every version of every dataset contract."""

    model_config = ConfigDict(frozen=True)
    root: Path
    agencies: tuple[Agency, ...]
    contracts: dict[str, tuple[Contract, ...]]  # dataset -> versions, oldest first

    def agency(self, agency_id: str) -> Agency:
        for a in self.agencies:
            if a.id == agency_id:
                return a
        raise ConfigurationError(
            f"unknown agency {agency_id!r}; known: {', '.join(a.id for a in self.agencies)} "
            f"(edit {self.root / 'agencies.yaml'})"
        )

    def versions(self, dataset: str) -> tuple[Contract, ...]:
        if dataset not in self.contracts:
            raise ConfigurationError(
                f"unknown dataset {dataset!r}; known: {', '.join(sorted(self.contracts))}"
            )
        return self.contracts[dataset]

    def latest(self, dataset: str) -> Contract:
        return self.versions(dataset)[-1]

    def check_cross_queries(self) -> Registry:
        """Run every cross-dataset rule's SQL on empty tables (needs DuckDB, so not part of
        ``load_registry``: see ``check_cross_queries``); returns the registry."""
        check_cross_queries(
            [c for versions in self.contracts.values() for c in versions],
            {dataset: versions[-1] for dataset, versions in self.contracts.items()},
        )
        return self

    def contract_for(self, dataset: str, day: dt.date, agency: Agency | None = None) -> Contract:
        """The version in force on a delivery day (the newest whose effectiveFrom <= day),
        with the agency's severity overrides applied when an agency is given."""
        in_force = [c for c in self.versions(dataset) if c.effective_from <= day]
        if not in_force:
            first = self.versions(dataset)[0]
            raise ConfigurationError(
                f"no {dataset} contract is in force on {day}: the first version "
                f"({first.version}) starts {first.effective_from}"
            )
        return _as_seen_by(in_force[-1], agency)

    def latest_for(self, dataset: str, agency: Agency | None) -> Contract:
        return _as_seen_by(self.latest(dataset), agency)

    def storage_contract(self, contract: Contract) -> Contract:
        """The version as its rows are stored: columns renamed by any later version, typed
        as the newest version types them (one curated table across versions)."""
        versions = self.versions(contract.dataset)
        later = [v for v in versions if v.effective_from > contract.effective_from]
        names: dict[str, str] = {}
        for version in later:
            for column in version.columns:
                if column.renamed_from is None:
                    continue
                for old, new in list(names.items()):
                    if new == column.renamed_from:
                        names[old] = column.name
                names.setdefault(column.renamed_from, column.name)
        newest = {c.name: c.logical_type for c in versions[-1].columns}
        return contract.renamed(names).retyped(newest)

    def references_for(self, contract: Contract, day: dt.date) -> dict[str, Contract]:
        """The contracts of the datasets a contract's cross-dataset rules read."""
        wanted = {d for rule in contract.cross_rules for d in rule.datasets}
        return {d: self._in_force_or_first(d, day) for d in sorted(wanted)}

    def _in_force_or_first(self, dataset: str, day: dt.date) -> Contract:
        in_force = [c for c in self.versions(dataset) if c.effective_from <= day]
        return in_force[-1] if in_force else self.versions(dataset)[0]

    def severity_overrides(self, dataset: str) -> dict[str, dict[str, str]]:
        """Agency id -> its severity overrides of the dataset's rules (for contract pages)."""
        return {
            a.id: dict(a.severity_overrides[dataset])
            for a in self.agencies_for(dataset)
            if a.severity_overrides.get(dataset)
        }

    def agencies_for(self, dataset: str, *also: str) -> list[Agency]:
        """The agencies delivering ``dataset`` (and every dataset in ``also``), in registry
        order: the one answer to "who delivers X" (assets, sensors, jobs, reconciliation)."""
        wanted = {dataset, *also}
        return [a for a in self.agencies if wanted <= set(a.datasets)]

    def content_datasets(self) -> list[str]:
        """Datasets whose latest contract maps rights and content: what use cases decide
        on, exports read and their run pods mount."""
        return sorted(d for d in self.contracts if self.latest(d).content is not None)


# (contract object, its overrides) -> (the contract, as seen with them). Built once per
# distinct set of overrides, not per agency and per call: definitions build an asset for
# every agency, and agencies with the same overrides (most have none) share one contract.
_SEEN_BY: dict[tuple[int, tuple[tuple[str, Severity], ...]], tuple[Contract, Contract]] = {}


def _as_seen_by(contract: Contract, agency: Agency | None) -> Contract:
    """The contract with the agency's severity overrides (those its rules know)."""
    if agency is None:
        return contract
    overrides = agency.severity_overrides.get(contract.dataset, {})
    known = tuple((rid, sev) for rid, sev in overrides.items() if rid in contract.rule_ids)
    if not known:
        return contract
    key = (id(contract), known)
    cached = _SEEN_BY.get(key)
    if cached is None or cached[0] is not contract:  # the first contract holds the id
        cached = _SEEN_BY[key] = (contract, contract.with_severities(dict(known)))
    return cached[1]


def known_agency(registry: Registry, agency_id: str) -> Agency:
    """The registry's agency; ConfigurationError listing the known ids otherwise. Ids are
    exact ('DOD' is not 'dod'): a guess would apply, or silently drop, the wrong agency's
    severity overrides."""
    try:
        return registry.agency(agency_id)
    except ConfigurationError as exc:
        near = [a.id for a in registry.agencies if a.id.lower() == agency_id.strip().lower()]
        if not near:
            raise
        raise ConfigurationError(f"{exc}; ids are exact: did you mean {near[0]!r}?") from None


def check_ids(registry: Registry, agency_id: str | None, dataset: str | None) -> Agency | None:
    """Every id a command was given, checked against the registry: the agency, the dataset,
    and that the agency delivers it. ConfigurationError naming the known ids otherwise."""
    agency = known_agency(registry, agency_id) if agency_id is not None else None
    if dataset is not None:
        registry.versions(dataset)  # an unknown dataset fails here, listing the known ones
        if agency is not None and dataset not in agency.datasets:
            raise ConfigurationError(
                f"{agency.id} does not deliver {dataset}; it delivers {', '.join(agency.datasets)}"
            )
    return agency


def contracts_dir() -> Path:
    return Path(os.environ.get(CONTRACTS_DIR_ENV, PROJECT_ROOT / "contracts"))


@functools.cache
def load_registry(root: Path | None = None) -> Registry:
    """Load and cross-check agencies and contracts (cached: definitions load it once)."""
    root = Path(root) if root is not None else contracts_dir()
    agencies = _load_agencies(root / "agencies.yaml")
    contracts = _load_contracts(root / "datasets")
    for agency in agencies:
        for dataset in agency.datasets:
            if dataset not in contracts:
                raise ConfigurationError(
                    f"{root / 'agencies.yaml'}: agency {agency.id} delivers {dataset!r} but "
                    f"there is no contract in {root / 'datasets' / dataset}"
                )
    _check_overrides(root, agencies, contracts)
    check_cross_rules(
        [c for versions in contracts.values() for c in versions],
        {dataset: versions[-1] for dataset, versions in contracts.items()},
        _delivered_beside(agencies),
    )
    return Registry(root=root, agencies=tuple(agencies), contracts=contracts)


def _check_overrides(
    root: Path, agencies: list[Agency], contracts: dict[str, tuple[Contract, ...]]
) -> None:
    for agency in agencies:
        for dataset, overrides in agency.severity_overrides.items():
            if dataset not in agency.datasets:
                raise ConfigurationError(
                    f"{root / 'agencies.yaml'}: agency {agency.id} overrides rules of "
                    f"{dataset!r}, which it does not deliver"
                )
            known = set().union(*(c.rule_ids for c in contracts[dataset]))
            unknown = sorted(set(overrides) - known)
            if unknown:
                raise ConfigurationError(
                    f"{root / 'agencies.yaml'}: agency {agency.id} overrides unknown "
                    f"{dataset} rules {unknown} (see `flux contracts show {dataset} "
                    "--format rules`)"
                )


def _delivered_beside(agencies: list[Agency]) -> dict[str, set[str]]:
    """Per dataset, the datasets every agency delivering it also delivers."""
    beside: dict[str, set[str]] = {}
    for agency in agencies:
        for dataset in agency.datasets:
            mine = set(agency.datasets)
            beside[dataset] = beside[dataset] & mine if dataset in beside else mine
    return beside


def _load_agencies(path: Path) -> list[Agency]:
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=SAFE_LOADER)
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigurationError(f"agency registry {path} cannot be read: {exc}") from exc
    entries = (raw or {}).get("agencies") if isinstance(raw, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ConfigurationError(f"{path}: expected a non-empty 'agencies:' list")
    agencies: list[Agency] = []
    for i, entry in enumerate(entries):
        if isinstance(entry, dict) and "domain" in entry:
            raise ConfigurationError(
                f"{path}: agency entry {i + 1} has 'domain', which is no longer read: a "
                "dataset's domain is its contract's (ODCS 'domain'); remove the field"
            )
        try:
            agencies.append(Agency.model_validate(entry))
        except ValidationError as exc:
            raise ConfigurationError(f"{path}: agency entry {i + 1} is invalid: {exc}") from exc
        except ConfigurationError as exc:
            raise ConfigurationError(f"{path}: agency entry {i + 1}: {exc}") from exc
    ids = [a.id for a in agencies]
    keys = [a.key for a in agencies]
    if len(set(ids)) != len(ids) or len(set(keys)) != len(keys):
        raise ConfigurationError(f"{path}: agency ids must be unique (also with '-' read as '_')")
    return agencies


def _load_contracts(folder: Path) -> dict[str, tuple[Contract, ...]]:
    if not folder.is_dir():
        raise ConfigurationError(f"contract folder {folder} does not exist")
    catalogue: dict[str, list[Contract]] = {}
    for path in sorted(folder.glob("*/*.odcs.yaml")):
        contract = load_contract(path)
        if contract.dataset != path.parent.name:
            raise ConfigurationError(
                f"{path}: contract name {contract.dataset!r} must match its folder "
                f"{path.parent.name!r}"
            )
        catalogue.setdefault(contract.dataset, []).append(contract)
    result: dict[str, tuple[Contract, ...]] = {}
    for dataset, versions in catalogue.items():
        versions.sort(key=lambda c: c.effective_from)
        days = [c.effective_from for c in versions]
        if len(set(days)) != len(days):
            raise ConfigurationError(f"{dataset}: two versions share one effectiveFrom date")
        result[dataset] = tuple(versions)
    return result
