"""Tags from captions: output repair (`parse`) and the tag distribution (`stats`)."""

from .parse import clean_tag, parse_tags, tags_from_cell

__all__ = ["clean_tag", "parse_tags", "tags_from_cell"]
