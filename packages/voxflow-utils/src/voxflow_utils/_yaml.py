"""A YAML loader for configuration files: safe, and strict about what ``yaml.safe_load`` lets
through.

- Aliases are references: 359 bytes of nested aliases ("billion laughs") describe a document
  of billions of nodes that validating or printing never finishes. The loader counts the nodes
  a document expands to while composing it and refuses more than ``MAX_NODES``; recursive
  aliases (a node containing itself) and nesting deeper than ``MAX_DEPTH`` are refused too.
- A key given twice in one mapping silently drops the first value in ``safe_load``; here it is
  an error naming the key and both lines. Keys merged with ``<<: *anchor`` may be overridden.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from ._errors import ConfigError

MAX_NODES = 1_000_000
"""Most nodes a document may expand to (aliases counted as copies)."""
MAX_DEPTH = 100
"""Deepest nesting of sequences and mappings."""

_MERGE_TAG = "tag:yaml.org,2002:merge"


class _ConfigLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that sizes aliases and refuses duplicate keys while composing."""

    def __init__(self, text: str, source: str) -> None:
        super().__init__(text)
        self.source = source
        self.expanded: dict[int, int] = {}  # id(node) -> nodes it expands to, once composed
        self.depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        if self.check_event(AliasEvent):
            event = self.peek_event()
            target = self.anchors.get(event.anchor)
            if target is not None and id(target) not in self.expanded:
                raise ConfigError(
                    f"{self.source}: line {event.start_mark.line + 1}: alias *{event.anchor} "
                    "refers to a node that contains it; a configuration must not be recursive"
                )
        self.depth += 1
        if self.depth > MAX_DEPTH:
            mark = self.peek_event().start_mark
            raise ConfigError(
                f"{self.source}: line {mark.line + 1}: nested deeper than {MAX_DEPTH} levels"
            )
        node: Node = super().compose_node(parent, index)
        self.depth -= 1
        if id(node) not in self.expanded:  # composed now, not an alias of an earlier node
            self.expanded[id(node)] = self._size(node)
        return node

    def _size(self, node: Node) -> int:
        if isinstance(node, ScalarNode):
            return 1
        if isinstance(node, SequenceNode):
            children = list(node.value)
        else:
            children = [child for pair in node.value for child in pair]
        size = 1 + sum(self.expanded[id(child)] for child in children)
        if size > MAX_NODES:
            raise ConfigError(
                f"{self.source}: line {node.start_mark.line + 1}: the YAML aliases expand to more "
                f"than {MAX_NODES:,} nodes ({size:,} by this line); refusing what looks like an "
                "alias bomb ('billion laughs')"
            )
        return size

    def compose_mapping_node(self, anchor: str | None) -> MappingNode:
        node: MappingNode = super().compose_mapping_node(anchor)
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, ScalarNode) or key_node.tag == _MERGE_TAG:
                continue  # complex keys fail in construction; merged keys may be overridden
            key = self.construct_object(key_node)
            line = key_node.start_mark.line + 1
            if key in first_line:
                raise ConfigError(
                    f"{self.source}: line {line}: duplicate key {key!r} (first on line "
                    f"{first_line[key]}); a repeated key would silently replace the first"
                )
            first_line[key] = line
        return node


def load_yaml(text: str, source: str) -> Any:
    """Parse one YAML document from ``text`` (from ``source``, a file or an override, named in
    errors).

    Raises:
        ConfigError: duplicate keys, recursive aliases, too deep or too large an expansion.
        yaml.YAMLError: the text is not YAML.
    """
    loader = _ConfigLoader(text, source)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()
