"""The Jinja2 environment of the report templates (templates/, shipped as package data).

HTML and SVG templates autoescape; the Markdown template escapes table cells with the `md` and `code` filters.
"""

import functools
import html

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape


def markdown_text(text) -> str:
    """Text for a Markdown table cell or paragraph: pipes escaped, HTML's < > & escaped, one line."""
    return html.escape(str(text), quote=False).replace("|", "\\|").replace("\n", " ")


def markdown_code(text) -> str:
    """An inline code span (a double-backtick span when the text holds a backtick)."""
    text = str(text).replace("|", "\\|").replace("\n", " ")
    return f"`` {text} ``" if "`" in text else f"`{text}`"


@functools.cache
def environment() -> Environment:
    env = Environment(
        loader=PackageLoader("gptoss_convert.report", "templates"),
        autoescape=select_autoescape(enabled_extensions=("html.j2", "svg.j2"), default_for_string=False),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["md"] = markdown_text
    env.filters["code"] = markdown_code
    return env


def render(template: str, **context) -> str:
    return environment().get_template(template).render(**context)
