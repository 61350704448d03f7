"""Reading JSON request bodies field by field, with errors shaped like OpenAI's (and, through `APIError.body`,
like whichever API answers them): a missing required field or a wrong JSON type is a 422, a bad value a 400, and
every message names the exact place ('messages[1].content') while `param` stays the top-level field. Shared by
every endpoint's request parser."""

from __future__ import annotations

import math
import re
from typing import Any, Callable


class APIError(Exception):
    """An error answered to an HTTP client; `body()` is OpenAI's shape, so its clients raise their usual exceptions."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

# --- errors ----------------------------------------------------------------------------------------------------------

def field(label: str) -> str:
    # 'messages[1].content' -> 'messages': param stays the top-level field, the message keeps the exact place
    return re.match(r"[^.\[]*", label).group()


def type_error(label: str, expected: str, value: object) -> APIError:
    message = f"Invalid type for '{label}': expected {expected}, but got {json_type(value)} instead."
    return APIError(422, message, param=field(label), code="invalid_type")


def json_type(value: object) -> str:
    names = {type(None): "null", bool: "a boolean", int: "an integer", float: "a number", str: "a string",
             list: "an array", dict: "an object"}
    return names.get(type(value), type(value).__name__)


def ensure(ok: object, label: str, message: str, code: str | None = None) -> None:
    if not ok:
        raise APIError(400, message, param=field(label), code=code)


def body_object(body: object) -> dict:
    if not isinstance(body, dict):
        raise APIError(400, f"The request body must be a JSON object, but got {json_type(body)}.")
    return body


# --- typed field reads -----------------------------------------------------------------------------------------------

def required(obj: dict, name: str, check: Callable | None = None, within: str = "") -> Any:
    label = f"{within}.{name}" if within else name
    if obj.get(name) is None:
        raise APIError(422, f"Missing required parameter: '{label}'.", param=field(label),
                       code="missing_required_parameter")
    return check(obj[name], label) if check else obj[name]


def read(obj: dict, name: str, check: Callable, default: Any = None, within: str = "") -> Any:
    value = obj.get(name)
    return default if value is None else check(value, f"{within}.{name}" if within else name)


def as_int(value: object, label: str) -> int:
    # JSON has one number type and some clients write 16.0: an integral float is taken as the int it names
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise type_error(label, "an integer", value)
    return value


def as_number(value: object, label: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise type_error(label, "a number", value)
    # Python's json module decodes NaN and Infinity, which would slip past every range check
    ensure(isinstance(value, int) or math.isfinite(value), label, f"Invalid '{label}': expected a finite number.")
    return value


def of_type(kind: type, expected: str) -> Callable:
    def check(value: object, label: str) -> Any:
        if not isinstance(value, kind):
            raise type_error(label, expected, value)
        return value
    return check


as_bool, as_object, as_list = of_type(bool, "a boolean"), of_type(dict, "an object"), of_type(list, "an array")


def as_str(value: object, label: str) -> str:
    if not isinstance(value, str):
        raise type_error(label, "a string", value)
    ensure(is_unicode(value), label, f"Invalid '{label}': the text holds a lone UTF-16 surrogate (an unpaired "
           "escape such as \\ud800), which is not Unicode text.", "invalid_value")
    return value


def is_unicode(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def bounded(body: dict, name: str, check: Callable, default: Any, within: Callable, rule: str) -> Any:
    value = read(body, name, check, default)
    ensure(value is None or within(value), name, f"Invalid '{name}': expected {rule}, but got {value} instead.")
    return value
