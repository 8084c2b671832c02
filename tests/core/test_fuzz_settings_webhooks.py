"""Fuzzing the two doors of untrusted text: settings (YAML file, ``UPTAKE_*`` env) and webhooks.

Settings: whatever the file or the environment holds, ``load_settings`` returns Settings or
raises ConfigError (the CLI's one line and exit 2), never a traceback. Webhooks: whatever a
client sends, verification returns or raises WebhookRejected (401), and it never accepts a
request that does not carry the secret or the exact signature.
"""

from __future__ import annotations

import json
import os
import string
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, example, given
from hypothesis import settings as fuzz_settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from registry import db
from registry.webhook_receiver import DeliveryLog, make_app
from uptake.errors import ConfigError
from uptake.registry_config import AlertSettings, RegistrySettings
from uptake.settings import SECRET_FIELDS, Settings, load_settings
from uptake.stack_config import StackSettings
from uptake.watcher_config import Sources, WatcherSettings
from uptake.webhooks import (
    HF_SECRET_HEADER,
    MLFLOW_DELIVERY_HEADER,
    MLFLOW_SIGNATURE_HEADER,
    MLFLOW_TIMESTAMP_HEADER,
    WebhookRejected,
    sign_mlflow,
    verify_mlflow_signature,
    verify_shared_secret,
)

FUZZ = fuzz_settings(
    max_examples=150,
    deadline=None,
    database=None,  # no .hypothesis/ folder in the work tree; failures print their example
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
NOW = 1_790_000_000.0

# --- settings ------------------------------------------------------------------------------

KNOWN_KEYS = sorted(
    {*Settings.model_fields, "partitions", "topics", "port", "host", "gate", "models", "mode"}
    | {"channels", "type", "url", "kind", "name", "authors", "path", "interval", "interval_s"}
    | {"backoff_max_s", "max_poll_interval_ms", "webhook", "max_age_s", "api_key", "token"}
)
texts = st.text(max_size=20)
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(-(10**4000), 10**4000)
    | st.floats()
    | texts
    | st.sampled_from(["5m", "15 min", "1.5h", "2001-02-30", "-", "~", "0x1F", ".inf", "1e400"])
)
keys = st.sampled_from(KNOWN_KEYS) | texts | st.integers(-2, 2)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=25,
)
mappings = st.dictionaries(st.sampled_from(KNOWN_KEYS) | texts, values, max_size=6)
_YAML_SNIPPETS = [
    "kafka:\n  partitions: ",
    "sources:\n  - ",
    ": &a [*a]\n",
    "!!binary ",
    "? ",
    "9" * 4400,
]
raw_yaml = st.lists(st.sampled_from(_YAML_SNIPPETS) | st.text(max_size=30), max_size=6).map("".join)
deep = st.sampled_from([30, 200, 600]).map(  # deeper: the @example (slow to parse)
    lambda n: "kafka: " + "[" * n + "]" * n + "\n"
)
yaml_files = (
    mappings.map(lambda d: yaml.safe_dump(d, allow_unicode=True))
    | raw_yaml
    | deep
    | st.binary(max_size=60)  # not UTF-8, mostly
)

ENV_NAMES = [
    "UPTAKE_HOME",
    "UPTAKE_KAFKA_BOOTSTRAP",
    "UPTAKE_LOG_LEVEL",
    "UPTAKE_TRUST_REMOTE_CODE_ALLOWLIST",
    "UPTAKE_KAFKA",
    "UPTAKE_KAFKA__PARTITIONS",
    "UPTAKE_KAFKA__TOPICS",
    "UPTAKE_KAFKA__TOPICS__RELEASES",
    "UPTAKE_MLFLOW__PORT",
    "UPTAKE_MLFLOW__WEBHOOK_SECRET",
    "UPTAKE_JUDGE",
    "UPTAKE_JUDGE__API_KEY",
    "UPTAKE_REGISTRY__MODELS",
    "UPTAKE_REGISTRY__GATE__MODE",
    "UPTAKE_REGISTRY__WEBHOOK__MAX_AGE_S",
    "UPTAKE_ALERTS__CHANNELS",
    "UPTAKE_ALERTS__GROUPING",
    "UPTAKE_SOURCES",
    "UPTAKE_WATCHER",
    "UPTAKE_WATCHER__WEBHOOK_SECRET",
    "UPTAKE_WATCHER__BACKOFF_MAX_S",
    "UPTAKE_STACK__CRASH_LOOP_EXITS",
]
env_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"))
env_names = (
    st.sampled_from(ENV_NAMES)
    | st.lists(
        st.sampled_from(["KAFKA", "TOPICS", "X", "", "0", "gate"]), min_size=1, max_size=4
    ).map(lambda parts: "UPTAKE_" + "__".join(parts))
).flatmap(lambda name: st.sampled_from([name, name.lower(), name.title()]))
env_values = (
    env_text
    | values.map(lambda v: json.dumps(v, default=str))  # "\u0000" escaped, never raw
    | st.sampled_from(["{", "[{", "null", "[]", "{}", '{"a": 1}', "1e400", "²", "5m", "true"])
    # non-UTF-8 bytes arrive as lone surrogates; an env value cannot hold NUL
    | st.binary(max_size=12).map(lambda b: os.fsdecode(b.replace(b"\x00", b"")))
)


@contextmanager
def uptake_env(env: dict[str, str]) -> Iterator[None]:
    """Exactly these ``UPTAKE_*`` variables for the duration (hypothesis runs many examples
    in one test call, so pytest's per-test monkeypatch cannot reset between them)."""
    saved = {k: v for k, v in os.environ.items() if k.upper().startswith("UPTAKE_")}
    for k in saved:
        del os.environ[k]
    os.environ.update(env)
    try:
        yield
    finally:
        for k in [k for k in os.environ if k.upper().startswith("UPTAKE_")]:
            del os.environ[k]
        os.environ.update(saved)


def _load(content: str | bytes | None, env: dict[str, str]) -> Settings | ConfigError:
    """The property: Settings, or a ConfigError with a message; anything else fails."""
    with tempfile.TemporaryDirectory() as tmp, uptake_env(env):
        path = None
        if content is not None:
            path = Path(tmp, "uptake.yaml")
            data = content if isinstance(content, bytes) else content.encode("utf-8", "replace")
            path.write_bytes(data)
        try:
            return load_settings(path)
        except ConfigError as exc:
            assert str(exc)
            return exc


@FUZZ
@given(yaml_files)
@example("sources: 5\n")  # was TypeError: 'int' object is not iterable
@example("a: 2001-02-30\n")  # was ValueError from PyYAML's timestamp constructor
@example("kafka:\n  partitions: " + "9" * 5000 + "\n")  # was ValueError: int digit limit
@example("kafka: " + "[" * 2000 + "]" * 2000 + "\n")  # was RecursionError in PyYAML
@example(b"kafka:\n  client_id: caf\xe9\n")
@example("? \n")  # was AttributeError in pydantic-settings: a None key
@example("1: 2\n")
def test_any_yaml_file_loads_or_is_a_config_error(content: str | bytes) -> None:
    _load(content, {})


@FUZZ
@given(st.dictionaries(env_names, env_values, max_size=5))
@example({"UPTAKE_WATCHER__WEBHOOK_SECRET": os.fsdecode(b"abcdefgh\xff")})
@example({"uptake_kafka__topics": '{"releases": {"a": 1}}', "UPTAKE_SOURCES": "[{"})
def test_any_uptake_env_loads_or_is_a_config_error(env: dict[str, str]) -> None:
    _load(None, env)


@FUZZ
@given(mappings, st.dictionaries(st.sampled_from(ENV_NAMES), env_values, max_size=3))
def test_yaml_and_env_together_load_or_are_a_config_error(
    data: dict[str, Any], env: dict[str, str]
) -> None:
    _load(yaml.safe_dump(data, allow_unicode=True), env)


def _any_case(word: str) -> st.SearchStrategy[str]:
    return st.lists(st.booleans(), min_size=len(word), max_size=len(word)).map(
        lambda flips: "".join(c.upper() if up else c for c, up in zip(word, flips, strict=True))
    )


@FUZZ
@given(
    st.sampled_from(sorted(SECRET_FIELDS)).flatmap(lambda f: st.tuples(*map(_any_case, f))),
    st.text(string.ascii_letters + string.digits, min_size=12, max_size=40),
)
def test_a_secret_in_yaml_is_refused_in_any_letter_case_without_echoing_it(
    path: tuple[str, ...], value: str
) -> None:
    secret = "sk-" + value
    node: Any = secret
    for key in reversed(path):
        node = {key: node}
    result = _load(yaml.safe_dump(node), {})
    assert isinstance(result, ConfigError)
    assert "secrets are read from the environment only" in str(result)
    assert secret not in str(result)


DURATION_KEYS = {
    "watcher": ["backoff_initial_s", "backoff_max_s", "outbox_retry_s"],
    "registry": ["reconcile_interval_s", "lease_s", "lock_timeout_s"],
    "alerts": ["backoff_s", "dedup_window_s"],
    "stack": ["restart_backoff_max_s", "stable_after_s"],
    "kafka": ["max_poll_interval_ms", "session_timeout_ms"],
}
durations = st.tuples(
    st.integers(0, 10**6) | st.floats(0, 1e6, allow_nan=False).map(lambda f: f"{f:.2f}"),
    st.sampled_from(["ms", "s", "m", "min", "h", "d"]),
    st.sampled_from(["", " "]),
).map(lambda t: f"{t[0]}{t[2]}{t[1]}")


@FUZZ
@given(
    st.sampled_from(sorted(DURATION_KEYS)).flatmap(
        lambda s: st.tuples(st.just(s), st.sampled_from(DURATION_KEYS[s]))
    ),
    durations,
    st.booleans(),
)
def test_a_duration_with_a_unit_is_refused_with_what_to_write(
    where: tuple[str, str], value: str, drop_suffix: bool
) -> None:
    section, key = where
    unit = "milliseconds" if key.endswith("_ms") else "seconds"
    if drop_suffix:  # ``backoff_max: 5m``: the key without its unit
        key = key.removesuffix("_ms").removesuffix("_s")
    result = _load(yaml.safe_dump({section: {key: value}}), {})
    assert isinstance(result, ConfigError)
    assert f"durations are {unit}: write " in str(result)


CONFIG_MODELS = [
    TypeAdapter(RegistrySettings),
    TypeAdapter(AlertSettings),
    TypeAdapter(WatcherSettings),
    TypeAdapter(StackSettings),
    TypeAdapter(Sources),
]


@FUZZ
@given(st.sampled_from(CONFIG_MODELS), values)
@example(CONFIG_MODELS[4], [{"kind": "hf", "name": "a", "authors": ["x"], "token": "hf_x"}])
@example(CONFIG_MODELS[4], [{"kind": "dir", "name": "a", "path": 5}, {"kind": "dir"}])
def test_config_models_only_raise_validation_errors(adapter: TypeAdapter[Any], data: Any) -> None:
    try:
        adapter.validate_python(data)
    except ValidationError as exc:
        assert "hf_x" not in str(exc)


# --- webhooks ------------------------------------------------------------------------------

# what Starlette hands over: header bytes decoded as latin-1; plus any str a caller may pass
header_text = st.binary(max_size=60).map(lambda b: b.decode("latin-1")) | st.text(
    st.characters() | st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), max_size=60
)
secrets = st.text(min_size=0, max_size=40) | st.binary(min_size=8, max_size=20).map(os.fsdecode)
timestamps = (
    st.integers(int(NOW) - 400, int(NOW) + 400).map(str)
    | st.integers().map(str)
    | st.just("9" * 5000)
    | st.sampled_from(["", "²", "١٢٣", " 1790000000", "1790000000\n", "+1790000000", "-1"])
    | header_text
)
signatures = (
    st.binary(max_size=40).map(lambda b: "v1," + __import__("base64").b64encode(b).decode())
    | st.sampled_from(["", "v1,", "v1,====", "v2,abc", "v1,\u00e9\u00e9"])
    | header_text
)
header_names = st.sampled_from(
    [
        MLFLOW_SIGNATURE_HEADER,
        MLFLOW_TIMESTAMP_HEADER,
        MLFLOW_DELIVERY_HEADER,
        HF_SECRET_HEADER,
        "X-MLflow-Signature",
        "X-Webhook-Secret",
    ]
) | st.text(max_size=20)


@FUZZ
@given(secrets, st.dictionaries(header_names, header_text, max_size=4), st.data())
@example("abcdefgh", {HF_SECRET_HEADER: "\ud800"}, None)  # was UnicodeEncodeError
@example(os.fsdecode(b"abcdefgh\xff"), {"X-Webhook-Secret": "abcdefgh"}, None)
def test_shared_secret_accepts_only_the_secret(
    secret: str, headers: dict[str, str], data: st.DataObject | None
) -> None:
    if data is not None and data.draw(st.booleans()):  # the secret in another letter case
        headers[HF_SECRET_HEADER] = data.draw(_any_case(secret))
    try:
        verify_shared_secret(secret, headers)
    except WebhookRejected:
        return
    given = {k.lower(): v for k, v in headers.items()}[HF_SECRET_HEADER]
    assert given == secret and len(secret) >= 8


@FUZZ
@given(
    secrets,
    st.fixed_dictionaries(
        {},
        optional={
            MLFLOW_SIGNATURE_HEADER: signatures,
            MLFLOW_TIMESTAMP_HEADER: timestamps,
            MLFLOW_DELIVERY_HEADER: header_text,
        },
    ),
    st.binary(max_size=80),
)
@example(
    "abcdefgh",
    {
        MLFLOW_SIGNATURE_HEADER: "v1,\ud800",
        MLFLOW_TIMESTAMP_HEADER: "1790000000",
        MLFLOW_DELIVERY_HEADER: "d",
    },
    b"{}",
)  # was UnicodeEncodeError
@example(
    "abcdefgh",
    {MLFLOW_SIGNATURE_HEADER: "v1,a", MLFLOW_TIMESTAMP_HEADER: "²", MLFLOW_DELIVERY_HEADER: "d"},
    b"{}",
)
def test_mlflow_signature_accepts_only_the_exact_signature(
    secret: str, headers: dict[str, str], body: bytes
) -> None:
    try:
        verified = verify_mlflow_signature(secret, headers, body, now=NOW)
    except WebhookRejected:
        return
    ts = headers[MLFLOW_TIMESTAMP_HEADER]
    expected = sign_mlflow(secret, headers[MLFLOW_DELIVERY_HEADER], ts, body.decode())
    assert headers[MLFLOW_SIGNATURE_HEADER] == expected
    assert verified.timestamp == int(ts) and abs(NOW - int(ts)) <= 300


def _signed(secret: str, delivery: str, body: bytes, ts: int) -> dict[str, str]:
    return {
        MLFLOW_SIGNATURE_HEADER: sign_mlflow(secret, delivery, str(ts), body.decode()),
        MLFLOW_TIMESTAMP_HEADER: str(ts),
        MLFLOW_DELIVERY_HEADER: delivery,
    }


@FUZZ
@given(
    # a long-enough secret: 8 characters (8 bytes can decode to fewer, found by CI's fuzzing)
    st.text(min_size=8, max_size=40)
    | st.binary(min_size=8, max_size=20).map(os.fsdecode).filter(lambda s: len(s) >= 8),
    st.text(string.ascii_letters + string.digits + "-", min_size=1, max_size=36),
    st.text(max_size=80).map(str.encode),
    st.integers(-300, 300),
    st.data(),
)
def test_a_signed_body_verifies_and_any_one_byte_change_does_not(
    secret: str, delivery: str, body: bytes, skew: int, data: st.DataObject
) -> None:
    ts = int(NOW) + skew
    headers = _signed(secret, delivery, body, ts)
    verified = verify_mlflow_signature(secret, headers, body, now=NOW)
    assert (verified.delivery_id, verified.timestamp) == (delivery, ts)

    if body:  # one byte of the body changed
        i = data.draw(st.integers(0, len(body) - 1))
        new = data.draw(st.integers(0, 255).filter(lambda b: b != body[i]))
        changed = body[:i] + bytes([new]) + body[i + 1 :]
        with pytest.raises(WebhookRejected):
            verify_mlflow_signature(secret, headers, changed, now=NOW)

    raw = headers[MLFLOW_SIGNATURE_HEADER].encode("latin-1")  # one byte of the signature
    i = data.draw(st.integers(0, len(raw) - 1))
    new = data.draw(st.integers(0, 255).filter(lambda b: b != raw[i]))
    forged = {
        **headers,
        MLFLOW_SIGNATURE_HEADER: (raw[:i] + bytes([new]) + raw[i + 1 :]).decode("latin-1"),
    }
    with pytest.raises(WebhookRejected):
        verify_mlflow_signature(secret, forged, body, now=NOW)

    with pytest.raises(WebhookRejected):  # the right signature, another secret
        verify_mlflow_signature(secret + "x", headers, body, now=NOW)


# --- the promoter's receiver, through its ASGI app ------------------------------------------

RECEIVER_SECRET = "receiver-secret-1"


@pytest.fixture(scope="module")
def receiver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    home = tmp_path_factory.mktemp("receiver")
    with uptake_env({}):
        settings = load_settings(home=home)
    engine = db.make_engine(settings)
    verdicts: list[tuple[str, str]] = []
    app = make_app(RECEIVER_SECRET, DeliveryLog(engine, 300.0), lambda *v: verdicts.append(v))
    with TestClient(app) as client:
        yield client
    engine.dispose()


@FUZZ
@given(
    st.dictionaries(
        st.sampled_from([MLFLOW_SIGNATURE_HEADER, MLFLOW_TIMESTAMP_HEADER, MLFLOW_DELIVERY_HEADER])
        | st.sampled_from(["content-type", "x-other"]),
        st.binary(max_size=60).filter(
            lambda b: b.strip() == b and b"\n" not in b and b"\r" not in b
        ),
        max_size=4,
    ),
    st.binary(max_size=200),
    st.booleans(),
)
def test_the_mlflow_receiver_answers_every_request_without_a_server_error(
    receiver: TestClient, headers: dict[str, bytes], body: bytes, sign: bool
) -> None:
    if sign and b"\x00" not in body:  # a fresh, correctly signed delivery with an odd body
        try:
            text = body.decode()
        except UnicodeDecodeError:
            text = None
        if text is not None:
            delivery = f"d-{time.monotonic_ns()}"
            headers = {
                k: v.encode()
                for k, v in _signed(RECEIVER_SECRET, delivery, body, int(time.time())).items()
            }
    response = receiver.post("/hooks/mlflow", content=body, headers=headers)
    assert response.status_code in (200, 202, 400, 401, 409), response.text
