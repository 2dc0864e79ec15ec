"""The call table as template.yaml defines it, for the local stack and the tests (moto), and
`import_file`, which loads a handler file (functions/*/app.py) by path.

Reading the schema from the template keeps moto's table and the deployed one from drifting.
PyYAML comes with the dev tools (cfn-lint); it is imported only here, on use.
"""

from __future__ import annotations

import importlib.util
import sys
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

CALL_TABLE_RESOURCE = "CallStateTable"


def import_file(path: Path, prefix: str) -> ModuleType:
    """The module in `path` under a fresh name (`<prefix>_<uuid>`), registered in sys.modules
    as dataclasses and pydantic expect. functions/* folders are not packages, and each import is
    a new copy with its own module state, like a new Lambda container."""
    name = f"{prefix}_{uuid.uuid4().hex}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load_template(path: Path) -> dict[str, Any]:
    """template.yaml with CloudFormation short-form tags (!Ref, !GetAtt, !Sub ...) read as
    plain mappings; a SafeLoader subclass, so no arbitrary objects."""
    import yaml

    class CfnLoader(yaml.SafeLoader):
        pass

    def tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
        value: Any
        if isinstance(node, yaml.ScalarNode):
            value = loader.construct_scalar(node)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
        # !Ref and !Condition are not functions: their long forms have no "Fn::"
        return {suffix if suffix in ("Ref", "Condition") else f"Fn::{suffix}": value}

    CfnLoader.add_multi_constructor("!", tag)
    with path.open(encoding="utf-8") as f:
        template: dict[str, Any] = yaml.load(f, Loader=CfnLoader)  # noqa: S506 - SafeLoader
    return template


def call_table_properties(template: Path) -> dict[str, Any]:
    resources = load_template(template).get("Resources", {})
    if CALL_TABLE_RESOURCE not in resources:
        raise ValueError(f"{template} defines no {CALL_TABLE_RESOURCE}")
    props: dict[str, Any] = resources[CALL_TABLE_RESOURCE]["Properties"]
    return props


def create_call_table(client: Any, table_name: str, props: dict[str, Any]) -> None:
    """Create the table (keys, billing, global secondary indexes, TTL attribute) from the
    template's properties."""
    indexes = props.get("GlobalSecondaryIndexes")
    client.create_table(
        TableName=table_name,
        KeySchema=props["KeySchema"],
        AttributeDefinitions=props["AttributeDefinitions"],
        BillingMode=props.get("BillingMode", "PAY_PER_REQUEST"),
        **({"GlobalSecondaryIndexes": indexes} if indexes else {}),
    )
    ttl = props.get("TimeToLiveSpecification")
    if ttl:
        client.update_time_to_live(
            TableName=table_name,
            TimeToLiveSpecification={
                "AttributeName": ttl["AttributeName"],
                "Enabled": bool(ttl.get("Enabled", True)),
            },
        )
