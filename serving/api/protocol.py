"""What every endpoint shares on the wire: OpenAI's error body and the error that carries it.

``{"error": {"message", "type", "param", "code"}}`` is what OpenAI answers and what its
clients parse (``param`` names the field at fault, or is null).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from uptake.errors import UptakeError


class ErrorInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    model_config = ConfigDict(extra="forbid")

    error: ErrorInfo


class ApiError(UptakeError):
    """An OpenAI-style error answer; its ``status`` says whose fault it is."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str,
        code: str | None = None,
        *,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.info = ErrorInfo(message=message, type=type_, param=param, code=code)
        self.headers = dict(headers or {})

    def body(self) -> ErrorResponse:
        return ErrorResponse(error=self.info)


def bad_request(message: str, code: str = "invalid_request", param: str | None = None) -> ApiError:
    return ApiError(400, message, "invalid_request_error", code, param=param)
