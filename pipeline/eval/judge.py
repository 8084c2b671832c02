"""LLM judge over any OpenAI-compatible ``/chat/completions`` endpoint.

One request grades one criterion of one response and must answer with exactly
``{"pass": bool, "reason": str}``. A malformed answer is sent back to the judge with a
correction request (up to ``max_retries`` times); transport failures and 5xx/429 are retried
with a short backoff. Verdicts are cached on disk by (judge model, criterion in its task,
response hash), so re-grading the same outputs costs nothing and a rerun after a failure
resumes where it stopped. A judge that never gives a valid verdict fails the run: a silent
"fail" would bias the metrics that promotion rests on.

``timeout_s`` bounds each request as a whole (``uptake.http_limits``), not each socket read,
and an answer over ``MAX_RESPONSE_BYTES`` is refused: a judge that drips its reply or floods
it cannot hold an evaluation or its memory.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.eval.suite import Criterion, JudgeCheck, Task
from uptake.errors import DependencyError
from uptake.http_limits import ResponseTooLarge, limited_client
from uptake.settings import JudgeSettings

MAX_RESPONSE_BYTES = 1 << 20  # a verdict is a few hundred bytes; a chat completion rarely 10 KiB

SYSTEM_PROMPT = (
    "You are a strict grader of legal work product. You are given a task, a response to it, "
    "and ONE criterion. Decide only whether the response satisfies that criterion. "
    'Answer with a single JSON object and nothing else: {"pass": true or false, '
    '"reason": "one short sentence"}.'
)
CORRECTION = (
    'Your answer was not valid. Reply with only a JSON object of the form {"pass": true, '
    '"reason": "..."} where "pass" is a JSON boolean and "reason" a string.'
)


class JudgeError(DependencyError):
    """The judge endpoint failed or never produced a valid verdict."""


class Verdict(BaseModel):
    """The strict verdict: a real boolean and a string, no other keys."""

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)

    passed: bool = Field(alias="pass")
    reason: str


def parse_verdict(content: str) -> Verdict | None:
    """Return the verdict, or None when the text is not exactly the JSON object we asked for.

    A single surrounding Markdown code fence is tolerated (many chat models add one).
    """
    text = content.strip()
    if text.startswith("```") and text.endswith("```") and len(text) >= 6:
        text = text[3:-3].strip()
        if text.lower().startswith("json"):
            text = text[4:].strip()
    try:
        data = json.loads(text)
        if isinstance(data, dict) and set(data) == {"verdict", "reasoning"}:
            data = lab_verdict(data)  # LAB's own verdict shape (pipeline/eval/agent/grade.py)
        return Verdict.model_validate(data)
    except (json.JSONDecodeError, ValidationError, RecursionError):
        return None


def lab_verdict(data: dict[str, Any]) -> dict[str, Any]:
    """``{"verdict": "pass"|"fail", "reasoning": …}`` as ``{"pass": bool, "reason": …}``; any
    other verdict word is left as a non-boolean, hence a malformed answer."""
    word = data["verdict"]
    passed: Any = (
        {"pass": True, "fail": False}.get(word.lower(), word) if isinstance(word, str) else word
    )
    return {"pass": passed, "reason": data["reasoning"]}


def _render_task(task: Task) -> str:
    return "\n\n".join(f"[{m.role}]\n{m.content}" for m in task.messages)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class JudgeCache:
    """One small JSON file per verdict; written atomically so parallel graders never clash."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def _path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.json"

    def get(self, key: str) -> Verdict | None:
        try:
            data = json.loads(self._path(key).read_text(encoding="utf-8"))
            return Verdict(passed=data["pass"], reason=data["reason"])
        except (OSError, ValueError, KeyError, ValidationError):
            return None

    def put(self, key: str, verdict: Verdict, model: str) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.{time.monotonic_ns()}.tmp")
        payload = {"pass": verdict.passed, "reason": verdict.reason, "model": model}
        tmp.write_text(json.dumps(payload), encoding="utf-8")
        os.replace(tmp, path)


class Judge:
    """Grades judge criteria; thread-safe (httpx.Client is), so callers may fan out."""

    def __init__(
        self,
        settings: JudgeSettings,
        cache_dir: str | Path | None = None,
        backoff_s: float = 0.5,
    ) -> None:
        if not settings.configured:
            raise ValueError("judge settings need base_url and model")
        self.settings = settings
        self.model = str(settings.model)
        self.cache = JudgeCache(cache_dir) if cache_dir is not None else None
        self.backoff_s = backoff_s
        headers = {"Content-Type": "application/json"}
        if settings.api_key is not None:
            headers["Authorization"] = f"Bearer {settings.api_key.get_secret_value()}"
        self._url = str(settings.base_url).rstrip("/") + "/chat/completions"
        self._client = limited_client(
            deadline_s=settings.timeout_s,
            max_bytes=MAX_RESPONSE_BYTES,
            headers=headers,
            timeout=settings.timeout_s,
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Judge:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def cache_key(self, task: Task, criterion: Criterion, response: str) -> str:
        check = criterion.check
        instructions = check.instructions if isinstance(check, JudgeCheck) else None
        parts = [
            self._url,  # two endpoints serving "the same" model name are two judges
            self.model,
            _render_task(task),
            criterion.description,
            instructions or "",
            _sha(response),
        ]
        return _sha(json.dumps(parts))

    def grade(self, task: Task, criterion: Criterion, response: str) -> Verdict:
        return self.grade_cached(task, criterion, response)[0]

    def grade_cached(self, task: Task, criterion: Criterion, response: str) -> tuple[Verdict, bool]:
        """The verdict and whether it came from the cache (RL rewards count cache hits)."""
        key = self.cache_key(task, criterion, response)
        if self.cache is not None and (hit := self.cache.get(key)) is not None:
            return hit, True
        verdict = self._ask(task, criterion, response)
        if self.cache is not None:
            self.cache.put(key, verdict, self.model)
        return verdict, False

    def _messages(self, task: Task, criterion: Criterion, response: str) -> list[dict[str, str]]:
        check = criterion.check
        extra = check.instructions if isinstance(check, JudgeCheck) and check.instructions else ""
        user = (
            f"TASK:\n{_render_task(task)}\n\n"
            f"RESPONSE TO GRADE:\n<<<\n{response}\n>>>\n\n"
            f"CRITERION: {criterion.description}" + (f"\nGRADING NOTES: {extra}" if extra else "")
        )
        return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]

    def grade_messages(
        self, messages: list[dict[str, str]], key_parts: list[str], label: str
    ) -> Verdict:
        """A verdict for prepared ``messages`` (another grading protocol, e.g. LAB's), cached
        under ``key_parts`` with this judge's endpoint and model; ``label`` names it in errors."""
        key = _sha(json.dumps([self._url, self.model, "messages", *key_parts]))
        if self.cache is not None and (hit := self.cache.get(key)) is not None:
            return hit
        verdict = self._ask_messages(messages, label)
        if self.cache is not None:
            self.cache.put(key, verdict, self.model)
        return verdict

    def _ask(self, task: Task, criterion: Criterion, response: str) -> Verdict:
        label = f"task {task.id!r} criterion {criterion.id!r}"
        return self._ask_messages(self._messages(task, criterion, response), label)

    def _ask_messages(self, messages: list[dict[str, str]], label: str) -> Verdict:
        attempts = self.settings.max_retries + 1
        last = "no attempt made"
        for attempt in range(attempts):
            try:
                content = self._post(messages)
            except _Retryable as exc:
                last = str(exc)
                if attempt + 1 < attempts:
                    time.sleep(self.backoff_s * (attempt + 1))
                continue
            verdict = parse_verdict(content)
            if verdict is not None:
                return verdict
            last = f"malformed verdict {content[:80]!r}"
            messages = [
                *messages,
                {"role": "assistant", "content": content},
                {"role": "user", "content": CORRECTION},
            ]
        raise JudgeError(
            f"judge {self.model} gave no valid verdict for {label} "
            f"after {attempts} attempt(s): {last}"
        )

    def _post(self, messages: list[dict[str, str]]) -> str:
        body: dict[str, Any] = {"model": self.model, "messages": messages, "temperature": 0}
        try:
            resp = self._client.post(self._url, json=body)
        except httpx.TimeoutException:
            raise _Retryable(
                f"timed out after {self.settings.timeout_s:g}s at {self._url}"
            ) from None
        except ResponseTooLarge as exc:
            raise JudgeError(f"judge endpoint {self._url} answered too much: {exc}") from None
        except httpx.TransportError as exc:
            raise _Retryable(f"cannot reach {self._url}: {exc}") from None
        if resp.status_code == 429 or resp.status_code >= 500:
            raise _Retryable(f"HTTP {resp.status_code} from {self._url}")
        if resp.status_code >= 400:
            raise JudgeError(
                f"judge endpoint {self._url} answered HTTP {resp.status_code}: {resp.text[:200]}"
            )
        try:
            return str(resp.json()["choices"][0]["message"]["content"] or "")
        except (ValueError, KeyError, IndexError, TypeError):
            return resp.text  # not a chat completion: treated as a malformed verdict


class _Retryable(Exception):
    """A transport-level failure worth another attempt."""
