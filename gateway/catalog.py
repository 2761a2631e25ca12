"""The catalog: agencies and services read from the config folder, validated at start-up.

Every file is checked against its JSON Schema in ``schemas/`` and every problem is
reported with the file and the field, so a typo stops start-up instead of being ignored.
String values may use ``${NAME}`` or ``${NAME:-default}`` to read the environment;
secret fields take ``env:NAME`` or ``file:PATH`` and are resolved only when used.
"""

from __future__ import annotations

import json
import os
import re
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from adapters.registry import adapter_class
from broker.limits import maintenance_problems
from core.domain.calendar import WorkingCalendar
from core.domain.dag import check_dag
from core.domain.errors import ConfigError
from core.domain.mapping import compile_mapping
from core.model import Agency, Catalog, DocumentKind, Service, Step

from .calendar_file import load_calendar
from .mapping_check import before, mapping_problems

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def load_schema(name: str) -> dict[str, Any]:
    """A JSON Schema shipped in the ``schemas`` package."""
    return json.loads(resources.files("schemas").joinpath(name).read_text(encoding="utf-8"))


def interpolate(value: Any, *, file: str) -> Any:
    """Replace ``${NAME}`` / ``${NAME:-default}`` in every string of ``value``."""
    if isinstance(value, str):
        def sub(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in os.environ:
                return os.environ[name]
            if default is None:
                raise ConfigError(f"environment variable {name} is not set and has no default", file=file)
            return default
        return _VAR.sub(sub, value)
    if isinstance(value, dict):
        return {k: interpolate(v, file=file) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, file=file) for v in value]
    return value


def _schema_errors(validator: jsonschema.protocols.Validator, document: Any, *, file: str, prefix: str = "") -> list[str]:
    problems = []
    for error in sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path)):
        where = ".".join(str(p) for p in error.absolute_path)
        where = prefix + (("." + where) if where and prefix else where)
        problems.append(f"{file}: {where or '(top level)'}: {error.message}")
    return problems


def _read_yaml(path: Path) -> Any:
    try:
        with path.open(encoding="utf-8") as fh:
            return yaml.safe_load(fh)
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {exc}", file=str(path)) from exc


def load_catalog(folder: str | os.PathLike[str], *, timezone: str = "Asia/Jakarta") -> Catalog:
    """Read and validate every agency and service under ``folder``.

    All problems of all files are collected and raised together as one ``ConfigError``
    whose lines each name the file and the field.
    """
    root = Path(folder)
    if not root.is_dir():
        raise ConfigError(f"catalog folder {root} does not exist")
    problems: list[str] = []
    agency_validator = jsonschema.Draft202012Validator(load_schema("agency.schema.json"))
    service_validator = jsonschema.Draft202012Validator(load_schema("service.schema.json"))

    agencies: dict[str, Agency] = {}
    for path in sorted((root / "agencies").glob("*.yaml")):
        file = str(path)
        try:
            doc = interpolate(_read_yaml(path), file=file)
        except ConfigError as exc:
            problems.append(str(exc))
            continue
        errors = _schema_errors(agency_validator, doc, file=file)
        if errors:
            problems.extend(errors)
            continue
        try:
            cls = adapter_class(doc["adapter"], file=file)
        except ConfigError as exc:
            problems.append(str(exc))
            continue
        problems.extend(_schema_errors(jsonschema.Draft202012Validator(cls.options_schema),
                                       doc.get("options", {}), file=file, prefix="options"))
        if "xroad" in doc:
            from adapters.xroad import XROAD_SCHEMA
            problems.extend(_schema_errors(jsonschema.Draft202012Validator(XROAD_SCHEMA), doc["xroad"],
                                           file=file, prefix="xroad"))
        op_validator = jsonschema.Draft202012Validator(cls.operation_schema)
        for op_name, op in doc["operations"].items():
            problems.extend(_schema_errors(op_validator, op, file=file, prefix=f"operations.{op_name}"))
        problems.extend(maintenance_problems(doc.get("maintenance", []), file=file))
        if doc.get("decisions") == "callback" and "callback" not in doc:
            problems.append(f"{file}: callback: agencies whose decisions come by callback need callback.secret")
        if doc["id"] in agencies:
            problems.append(f"{file}: id: agency {doc['id']!r} is also defined in {agencies[doc['id']].file}")
            continue
        agencies[doc["id"]] = Agency.from_document(doc, file=file)

    services: dict[str, Service] = {}
    for path in sorted((root / "services").glob("*.yaml")):
        file = str(path)
        try:
            service = _load_service(path, service_validator, agencies)
        except ConfigError as exc:
            problems.extend(str(exc).splitlines())
            continue
        if service.id in services:
            problems.append(f"{file}: id: service {service.id!r} is also defined in {services[service.id].file}")
            continue
        services[service.id] = service
    try:
        calendar = load_calendar(root, timezone)
    except ConfigError as exc:
        lines = str(exc).splitlines()
        problems.extend(line.strip() for line in (lines[1:] or lines))
        calendar = WorkingCalendar(timezone)
    if problems:
        raise ConfigError("the catalog is not valid:\n" + "\n".join("  " + p for p in problems))
    return Catalog(agencies=agencies, services=services, folder=str(root), calendar=calendar)


def _load_service(path: Path, validator: jsonschema.protocols.Validator, agencies: dict[str, Agency]) -> Service:
    file = str(path)
    doc = interpolate(_read_yaml(path), file=file)
    errors = _schema_errors(validator, doc, file=file)
    if errors:
        raise ConfigError("\n".join(errors))
    problems = []
    for name, step in doc["steps"].items():
        agency = agencies.get(step["agency"])
        if agency is None:
            problems.append(f"{file}: steps.{name}.agency: unknown agency {step['agency']!r}; "
                            f"known: {', '.join(sorted(agencies)) or '(none)'}")
        elif step["operation"] not in agency.operations:
            problems.append(f"{file}: steps.{name}.operation: agency {agency.id!r} has no operation "
                            f"{step['operation']!r}; it has: {', '.join(sorted(agency.operations))}")
    schema_path = (path.parent / doc["input_schema"]).resolve()
    try:
        input_schema = json.loads(schema_path.read_text(encoding="utf-8"))
        jsonschema.Draft202012Validator.check_schema(input_schema)
    except OSError as exc:
        problems.append(f"{file}: input_schema: cannot read {schema_path}: {exc.strerror}")
        input_schema = {}
    except (ValueError, jsonschema.SchemaError) as exc:
        problems.append(f"{file}: input_schema: {schema_path} is not a valid JSON Schema: {exc}")
        input_schema = {}
    documents = {kind: DocumentKind(title=rules["title"], required=rules.get("required", False),
                                    media_types=tuple(rules["media_types"]), max_bytes=rules["max_bytes"])
                 for kind, rules in doc.get("documents", {}).items()}
    steps = {}
    for name, step in doc["steps"].items():
        problems.extend(f"{file}: steps.{name}.documents: the service declares no document kind {kind!r}"
                        for kind in step.get("documents", ()) if kind not in documents)
        try:
            compiled = compile_mapping(step["request"], file=file, field=f"steps.{name}.request")
        except ConfigError as exc:
            problems.append(str(exc))
            compiled = {}
        steps[name] = Step(name=name, agency=step["agency"], operation=step["operation"],
                           after=tuple(step.get("after", ())), request=step["request"], compiled=compiled,
                           title=step.get("title"), documents=tuple(step.get("documents", ())))
    try:
        order = check_dag({n: s.after for n, s in steps.items()}, file=file)
    except ConfigError as exc:
        problems.append(str(exc))
        order = list(steps)
    else:
        after = {n: s.after for n, s in steps.items()}
        for name, step in steps.items():
            earlier = before(name, after)
            for field_name, expression in step.request.items():
                problems.extend(f"{file}: steps.{name}.request.{field_name}: {problem}" for problem in
                                mapping_problems(name, expression, schema=input_schema, earlier=earlier))
    if problems:
        raise ConfigError("\n".join(problems))
    sla = doc.get("sla", {})
    return Service(id=doc["id"], title=doc["title"], version=doc["version"], input_schema=input_schema,
                   steps=steps, file=file, order=tuple(order), sla_hours=sla.get("hours"),
                   sla_working_days=sla.get("working_days"), description=doc.get("description"),
                   documents=documents)
