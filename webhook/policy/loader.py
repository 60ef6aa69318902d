"""Reading policy files: YAML in, compiled policies out, errors naming the file."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml
from kubewrit.webhook.policy.compiler import PolicyError, compile_document
from kubewrit.webhook.policy.model import Policy

SUFFIXES = (".yaml", ".yml", ".json")


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys instead of keeping the last one silently."""


def _construct_mapping(
    loader: StrictLoader, node: yaml.MappingNode, deep: bool = False
) -> dict[Any, Any]:
    mapping: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
        if key in mapping:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        mapping[key] = loader.construct_object(value_node, deep=deep)  # type: ignore[no-untyped-call]
    return mapping


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def parse_text(text: str, source: str) -> list[Policy]:
    """Compile every document in a YAML stream (multi-document files allowed)."""
    try:
        documents = [doc for doc in yaml.load_all(text, Loader=StrictLoader) if doc is not None]
    except yaml.YAMLError as exc:
        raise PolicyError(source, "", f"not valid YAML: {exc}") from None
    stem = Path(source).stem
    policies = []
    for index, document in enumerate(documents):
        default_name = stem if len(documents) == 1 else f"{stem}-{index + 1}"
        compiled = compile_document(document, source, default_name)
        # Policy files serve standalone agents, which have no namespace.
        policies.append(replace(compiled, namespace=None))
    return policies


def load_file(path: Path) -> list[Policy]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(str(path), "", f"cannot read: {exc}") from None
    return parse_text(text, str(path))


def is_policy_name(name: str) -> bool:
    """A policy file's name in a directory: a policy suffix, not hidden, not an editor temp."""
    return Path(name).suffix in SUFFIXES and not name.startswith((".", "#"))


def policy_files(paths: Iterable[Path]) -> list[Path]:
    """Expand directories to their policy files (sorted, hidden and editor temp files skipped)."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(
                sorted(p for p in path.iterdir() if p.is_file() and is_policy_name(p.name))
            )
        else:
            found.append(path)
    return found


def check_unique(policies: Iterable[Policy]) -> None:
    """Raise PolicyError naming the file of the second policy that reuses a name."""
    names: dict[str, str] = {}
    for policy in policies:
        if policy.name in names:
            raise PolicyError(
                policy.source,
                "name",
                f"policy name {policy.name!r} is already used by {names[policy.name]}",
            )
        names[policy.name] = policy.source


def load_paths(paths: Iterable[Path]) -> list[Policy]:
    """Load every policy under `paths`. Raises PolicyError on the first invalid file."""
    policies = [policy for file in policy_files(paths) for policy in load_file(file)]
    check_unique(policies)
    return policies
