"""What a message template may see: plain, read-only data.

Templates are written by users in the editor and rendered by Django's template engine, which
calls any callable it reaches. The context therefore holds no model, no settings, no request:
only the contact as JSON-like data, with dicts as read-only mappings and lists as tuples, so
`{{ contact.attributes.clear }}` or `{{ contact.attributes.tags.pop }}` finds nothing to call
and cannot change what the next message of the same batch sees.
"""

from types import MappingProxyType


def read_only(value):
    """JSON-like data, recursively frozen; anything else becomes its string form."""
    if isinstance(value, dict):
        return MappingProxyType({str(key): read_only(item) for key, item in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(read_only(item) for item in value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)
