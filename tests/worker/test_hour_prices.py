"""The worker's hour prices: from its settings (as ``uptake demo`` writes them) to the price a
job logs its cost with, picked by the device the evaluation runs on (docs/evaluation.md
"Cost"). The job's logging itself is checked end to end in ``test_job_e2e.py``."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from pipeline.worker.job_spec import spec_for
from uptake.cost import Price, hour_price, task_cost
from uptake.demo.config import (
    CPU_HOUR_USD,
    GPU_HOUR_USD,
    SMALL,
    SOURCE_NAME,
    demo_paths,
    write_demo_config,
)
from uptake.events import ReleaseDetected, release_id
from uptake.settings import Settings, load_settings
from uptake.worker_config import WorkerSettings


def release() -> ReleaseDetected:
    return ReleaseDetected(
        producer="test",
        release_id=release_id(SOURCE_NAME, "demo-org/tiny-llama", "a" * 64),
        source=SOURCE_NAME,
        repo_id="demo-org/tiny-llama",
        revision="a" * 64,
    )


@pytest.fixture
def demo_settings(tmp_path: Path) -> Settings:
    """The settings every service of ``uptake demo`` reads."""
    return load_settings(write_demo_config(demo_paths(tmp_path / "demo"), SMALL))


def test_the_demo_prices_its_runs(demo_settings: Settings) -> None:
    assert demo_settings.worker.cpu_hour_price == CPU_HOUR_USD
    assert demo_settings.worker.gpu_hour_price == GPU_HOUR_USD
    spec = spec_for(demo_settings, release(), demo_settings.tracks[0], worker="w")
    assert (spec.worker.cpu_hour_price, spec.worker.gpu_hour_price) == (CPU_HOUR_USD, GPU_HOUR_USD)
    on_cpu = spec.model_copy(update={"worker": spec.worker.model_copy(update={"device": "cpu"})})
    assert on_cpu.eval_price() == Price(cpu_hour=CPU_HOUR_USD)


def test_no_price_configured_logs_no_cost(demo_settings: Settings) -> None:
    settings = demo_settings.model_copy(update={"worker": WorkerSettings(device="cpu")})
    spec = spec_for(settings, release(), settings.tracks[0], worker="w")
    assert spec.worker.cpu_hour_price is None and spec.worker.gpu_hour_price is None
    assert spec.eval_price() is None


def test_the_device_picks_the_price() -> None:
    prices = {"cpu_hour": 0.1, "gpu_hour": 3.0}
    assert hour_price("cuda", **prices) == Price(gpu_hour=3.0)
    assert hour_price("cpu", **prices) == Price(cpu_hour=0.1)
    assert hour_price("cuda", cpu_hour=0.1, gpu_hour=None) is None  # no GPU price: no cost
    # an hour of either kind: its price times the generation time, over the tasks
    for price in (Price(cpu_hour=0.1), Price(gpu_hour=0.1)):
        cost = task_cost(price, 4, tokens_in=None, tokens_out=None, generation_seconds=72.0)
        assert cost == pytest.approx(0.1 * 72 / 3600 / 4)


def test_one_kind_of_price() -> None:
    with pytest.raises(ValidationError, match="not both"):
        Price(cpu_hour=0.1, gpu_hour=3.0)
    with pytest.raises(ValidationError, match="not both"):
        Price.of(1.0, 2.0, None, 0.1)
    assert Price.of(None, None, None, 0.1) == Price(cpu_hour=0.1)
    assert Price.of(None, None, None) is None


def test_a_negative_price_is_refused() -> None:
    with pytest.raises(ValidationError, match="cpu_hour_price"):
        WorkerSettings(cpu_hour_price=-1)
