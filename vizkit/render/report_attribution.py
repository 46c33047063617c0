"""The report's attribution section (``vizkit report --method M``): the chosen methods' maps of the image, on the
page ``vizkit attribute`` draws for one image."""
from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vizkit.project.attribute.result import AttributeResult
    from vizkit.render.report import Section


def attribution_section(result: AttributeResult) -> Section:
    from vizkit.render.attribute_pages import image_page
    from vizkit.render.report import Section

    labels = ", ".join(m.label for m in result.maps)
    return Section(f"Attribution ({labels})", [partial(image_page, result, 0)],
                   summary="the chosen attribution methods side by side, each on its own scale")


__all__ = ["attribution_section"]
