"""What a person may say about brands, products and templates (pure: pydantic only).

Each model validates a whole record; an update validates the record as it would be after the
change, so a bad field is refused the same way on create and update. Errors are
`InvalidCatalogInput`: one line per field, its name and what is allowed.
"""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from domain.errors import FieldProblem, InvalidJobSpec

#: A colour as `#rrggbb`.
HexColor = Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^#[0-9a-fA-F]{6}$")]
ShortText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
MAX_NAME_LENGTH = 120
MAX_DESCRIPTION_LENGTH = 2000
MAX_COLORS = 12
MAX_LIST_ITEMS = 50
#: Storage names of catalog templates: a file name, no folders.
STORAGE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}\.(png|jpg|jpeg|webp)$"


class InvalidCatalogInput(InvalidJobSpec):
    """A brand, product or template field is invalid; nothing was written.

    Attributes:
        problems: One `FieldProblem` per invalid field (its name and what is allowed).
    """

    def __init__(self, entity: str, problems: list[FieldProblem]) -> None:
        super().__init__(problems)
        lines = "\n".join(f"  - {p}" for p in problems)
        self.args = (f"invalid {entity}:\n{lines}",)

    @classmethod
    def one(cls, entity: str, field: str, message: str) -> InvalidCatalogInput:  # type: ignore[override]
        """An error about one field of a brand, product or template."""
        return cls(entity, [FieldProblem(field=field, message=message)])


class BrandFields(BaseModel):
    """A brand: its name (unique per tenant) and colours (`#rrggbb`, at most 12)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: str = Field(min_length=1, max_length=MAX_NAME_LENGTH)
    colors: list[HexColor] = Field(default_factory=list, max_length=MAX_COLORS)


class ProductFields(BaseModel):
    """A product: what ads are made for.

    Attributes:
        name: Unique within its brand.
        description: Free text (at most 2000 characters).
        key_benefits: Short lines; the content source `benefits` draws headlines from them.
        brand_colors: `#rrggbb` colours; the colour mode `brand` uses them.
        image_paths: Storage paths of product photos; the image mode picks one.
        hooks: Ready-made headlines; the content source `hooks` draws from them.
    """

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: str = Field(min_length=1, max_length=MAX_NAME_LENGTH)
    description: str = Field(default="", max_length=MAX_DESCRIPTION_LENGTH)
    key_benefits: list[ShortText] = Field(default_factory=list, max_length=MAX_LIST_ITEMS)
    brand_colors: list[HexColor] = Field(default_factory=list, max_length=MAX_COLORS)
    image_paths: list[ShortText] = Field(default_factory=list, max_length=MAX_LIST_ITEMS)
    hooks: list[ShortText] = Field(default_factory=list, max_length=MAX_LIST_ITEMS)


class TemplateFields(BaseModel):
    """A catalog template: its storage (file) name, display name and tags."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    storage_name: str = Field(pattern=STORAGE_NAME_PATTERN)
    name: str = Field(default="", max_length=MAX_NAME_LENGTH)
    tags: list[ShortText] = Field(default_factory=list, max_length=MAX_LIST_ITEMS)


M = TypeVar("M", bound=BaseModel)


def validated(model: type[M], entity: str, data: dict[str, Any]) -> M:
    """`data` validated as `model`.

    Raises:
        InvalidCatalogInput: Naming each bad field (input values are never echoed).
    """
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = InvalidJobSpec.from_validation_error(exc).problems
        for problem in problems:
            if problem.field == "storage_name" and "pattern" in problem.message:
                problem.message = (
                    "not a template file name; allowed: letters, digits, '.', '_', '-' ending "
                    "in .png, .jpg, .jpeg or .webp"
                )
            elif "pattern" in problem.message and "colors" in problem.field:
                problem.message = "not a colour; allowed: #rrggbb, e.g. #0f766e"
        raise InvalidCatalogInput(entity, problems) from None
