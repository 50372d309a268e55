"""The error hierarchy: unique codes, HTTP statuses, lookup by code, and `__all__`."""

from __future__ import annotations

import re

import pytest

import openmaas.errors as errors_module
from openmaas.errors import (
    BadRequestError,
    InvalidInputError,
    NotFoundError,
    OpenMaaSError,
    UnknownInputError,
    all_error_classes,
    error_class_for_code,
)

ERROR_CLASSES = all_error_classes()


def test_every_error_class_is_found() -> None:
    defined = {
        value
        for name, value in vars(errors_module).items()
        if isinstance(value, type) and issubclass(value, OpenMaaSError) and name[0] != "_"
    }
    assert set(ERROR_CLASSES) == defined
    assert ERROR_CLASSES[0] is OpenMaaSError
    assert len(ERROR_CLASSES) == len(set(ERROR_CLASSES))


def test_codes_are_unique() -> None:
    codes = [cls.code for cls in ERROR_CLASSES]
    assert len(codes) == len(set(codes))


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda cls: cls.__name__)
def test_class_has_status_code_and_title(cls: type[OpenMaaSError]) -> None:
    assert 400 <= cls.status <= 599
    assert re.fullmatch(r"[a-z]+(_[a-z]+)*", cls.code)
    assert cls.title
    assert cls.__name__.endswith("Error")


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda cls: cls.__name__)
def test_error_class_for_code_round_trips(cls: type[OpenMaaSError]) -> None:
    assert error_class_for_code(cls.code) is cls


def test_unknown_code_maps_to_the_base_class() -> None:
    assert error_class_for_code("no_such_code") is OpenMaaSError


def test_all_lists_every_class_and_nothing_else() -> None:
    names = {cls.__name__ for cls in ERROR_CLASSES}
    assert names <= set(errors_module.__all__)
    assert set(errors_module.__all__) - names == {"all_error_classes", "error_class_for_code"}
    assert all(hasattr(errors_module, name) for name in errors_module.__all__)
    assert errors_module.__all__ == sorted(errors_module.__all__)


def test_subclasses_inherit_the_parent_status() -> None:
    assert UnknownInputError.status == InvalidInputError.status == BadRequestError.status == 400
    assert issubclass(UnknownInputError, InvalidInputError)
    assert issubclass(error_class_for_code("model_not_found"), NotFoundError)


def test_instance_carries_detail_and_field() -> None:
    error = UnknownInputError("use 'x'", field="inputs.y")
    assert error.detail == "use 'x'"
    assert error.field == "inputs.y"
    assert str(error) == "use 'x'"


def test_instance_without_detail_falls_back_to_title() -> None:
    error = NotFoundError()
    assert error.detail == NotFoundError.title
    assert error.field is None
    assert str(error) == NotFoundError.title
