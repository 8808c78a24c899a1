"""Message templates become Liquid (issue 12): stored subjects, bodies and SMS texts written
for Django's template engine are rewritten where Liquid reads them differently.

Which rows: every journey version (drafts, live and retired ones) and the outbox messages
still pending, which hold their step's template text until they are sent. Published
versions are history and journeys.signals refuses to change them through save(); this is a
change of notation, not of behaviour (the same contact gets the same text), so it is written
with queryset.update(), which the guard does not see. Sent and failed messages keep what
they held.

What is converted (only inside `{{ }}` and `{% %}`): Django's filters that Liquid names
otherwise (`upper` -> `upcase`, `length` -> `size`, ...), `forloop.counter` and friends,
`.0` indexes -> `[0]`, `True`/`False`/`None`, `{% elif %}`, `{% empty %}` in a for loop,
`{# #}` comments and `{% verbatim %}`. `|default:'x'` is valid Liquid already. A template
that still does not parse afterwards (a Django tag or filter Liquid has no form for) is
named on the console; in a published version or a pending message it is wrapped in
`{% raw %}` so that the journey keeps running and the message fails nothing else: the text
goes out as written, visibly wrong, until a fixed version is published. A draft keeps it
as it is, and the editor shows the error.
"""

import re

from django.db import migrations

from journeys.message_templates import TemplateSyntaxError, compile_template

MESSAGE_FIELDS = {"send_email": ("subject", "body"), "send_sms": ("text",)}

FILTERS = {
    "upper": "upcase",
    "lower": "downcase",
    "length": "size",
    "capfirst": "capitalize",
    "striptags": "strip_html",
    "linebreaksbr": "newline_to_br",
    "urlencode": "url_encode",
    "default_if_none": "default",
    "add": "plus",
    "truncatechars": "truncate",
    "cut": "remove",
}
FORLOOP = {
    "counter0": "index0",
    "counter": "index",
    "revcounter0": "rindex0",
    "revcounter": "rindex",
}
LITERALS = {"True": "true", "False": "false", "None": "nil"}

_MARKUP = re.compile(r"(\{\{.*?\}\}|\{%.*?%\})", re.DOTALL)
_STRINGS = re.compile(r"""("[^"]*"|'[^']*')""")
_COMMENT = re.compile(r"\{#(.*?)#\}", re.DOTALL)


def _convert_code(code: str) -> str:
    # Quoted strings are kept as they are; only the code between them is rewritten.
    parts = _STRINGS.split(code)
    for index in range(0, len(parts), 2):
        part = parts[index]
        part = re.sub(
            r"\|(\s*)(\w+)",
            lambda m: "|" + m.group(1) + FILTERS.get(m.group(2), m.group(2)),
            part,
        )
        part = re.sub(
            r"\bforloop\.(counter0|counter|revcounter0|revcounter)\b",
            lambda m: "forloop." + FORLOOP[m.group(1)],
            part,
        )
        part = re.sub(r"(?<=[\w\]])\.(\d+)\b", r"[\1]", part)
        part = re.sub(r"\b(True|False|None)\b", lambda m: LITERALS[m.group(1)], part)
        part = re.sub(r"^(\s*)elif\b", r"\1elsif", part)
        part = re.sub(r"^(\s*)empty(\s*)$", r"\1else\2", part)
        part = re.sub(r"^(\s*)(end)?verbatim\b.*$", r"\1\2raw ", part, flags=re.DOTALL)
        parts[index] = part
    return "".join(parts)


def to_liquid(text: str) -> str:
    """A template written for Django's engine, written the way Liquid reads it the same."""
    text = _COMMENT.sub(r"{% comment %}\1{% endcomment %}", text)
    pieces = _MARKUP.split(text)
    for index in range(1, len(pieces), 2):
        piece = pieces[index]
        opening, closing = piece[:2], piece[-2:]
        pieces[index] = opening + _convert_code(piece[2:-2]) + closing
    return "".join(pieces)


def parses(text: str) -> bool:
    try:
        compile_template(text)
    except TemplateSyntaxError:
        return False
    return True


def convert(text: str, *, keep_running: bool, where: str, report) -> str:
    """`text` as Liquid; one still not Liquid is reported, and wrapped in raw when
    `keep_running` (it must parse wherever the engine reads it)."""
    if not isinstance(text, str) or not text.strip():
        return text
    converted = to_liquid(text)
    if parses(converted):
        return converted
    report(f"  {where}: not Liquid after conversion; " + ("sent as written" if keep_running else "left for the editor"))
    if not keep_running:
        return text
    return "{% raw %}" + text.replace("{% endraw %}", "{% endraw %}{{ '{% endraw %}' }}{% raw %}") + "{% endraw %}"


def convert_steps(steps, *, keep_running: bool, where: str, report) -> bool:
    """Converts the message fields of a definition's steps in place; True if any changed."""
    changed = False
    if not isinstance(steps, list):
        return False
    for step in steps:
        if not isinstance(step, dict):
            continue
        for field in MESSAGE_FIELDS.get(step.get("type"), ()):
            if isinstance(step.get(field), str):
                new = convert(
                    step[field],
                    keep_running=keep_running,
                    where=f"{where} step {step.get('key')!r} {field}",
                    report=report,
                )
                if new != step[field]:
                    step[field] = new
                    changed = True
    return changed


def forwards(apps, schema_editor):
    JourneyVersion = apps.get_model("journeys", "JourneyVersion")
    OutboxMessage = apps.get_model("journeys", "OutboxMessage")
    for version in JourneyVersion.objects.select_related("journey").iterator():
        definition = version.definition
        if not isinstance(definition, dict):
            continue
        where = f"journey {version.journey.key!r} v{version.number}"
        if convert_steps(
            definition.get("steps"),
            keep_running=version.state != "draft",
            where=where,
            report=print,
        ):
            JourneyVersion.objects.filter(pk=version.pk).update(definition=definition)
    for message in OutboxMessage.objects.filter(status="pending").iterator():
        where = f"outbox message {message.pk}"
        subject = convert(message.subject, keep_running=True, where=where, report=print)
        body = convert(message.body, keep_running=True, where=where, report=print)
        if (subject, body) != (message.subject, message.body):
            OutboxMessage.objects.filter(pk=message.pk).update(subject=subject, body=body)


class Migration(migrations.Migration):
    dependencies = [("journeys", "0010_outbox_sending_since")]

    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
