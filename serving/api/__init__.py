"""The HTTP API, laid out as vLLM's ``entrypoints/openai``: one package per endpoint
(``api_router.py`` the route, ``protocol.py`` its pydantic request and response models,
``serving.py`` the work behind it), the error body and handlers installed once
(``errors.py``), an authentication middleware that guards every path not listed as public
(``auth.py``), and ``build_app`` (``app.py``) putting them together."""

from serving.api.app import VERSION_HEADER, build_app

__all__ = ["VERSION_HEADER", "build_app"]
