"""Expected speed (planning/speed.py), its calibration (calibration.py, speed_probe.py), the speed-aware
recommendation (planning/recommend.py) and where they are shown (qwen-chat models / plan)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from qwen_chat.catalog.loader import load_models
from qwen_chat.cli.reports import print_models, print_plan
from qwen_chat.planning import calibration
from qwen_chat.planning.planner import Plan, Weights
from qwen_chat.planning.recommend import choose
from qwen_chat.planning.speed import DeviceRate, Rates, Workload, predict, workload_from_catalog
from qwen_chat.planning.speed_probe import ProbeRun, calibrate, derive
from qwen_chat.system.hardware import Device, Machine

GiB = 1 << 30
CPU = DeviceRate(bandwidth=20e9, flops=100e9, attention_flops=40e9, measured=True)
RATES = Rates(CPU, threads=2)


def plan(n_gpu: int = 0, n_cpu_moe: int = 0, ctx: int = 8192) -> Plan:
    return Plan("Q4_K_M", ctx, n_gpu, n_cpu_moe, "f16", False, 0, 0, 0, 0, 0, True)


def machine(ram: float = 23, gpus: tuple[Device, ...] = ()) -> Machine:
    return Machine(int(ram * 1.05 * GiB), int(ram * GiB), 2, 2, gpus, bool(gpus))


def dense(layers: int = 10, per_layer: int = 100_000_000) -> Workload:
    return Workload(Weights((per_layer,) * layers, (0,) * layers, 50_000_000, 50_000_000, exact=True),
                    1.0, 0.5, 1024, layers, 8192)


def test_dense_decode_is_the_weights_and_cache_over_the_bandwidth() -> None:
    work = dense()
    at = predict(work, plan(), RATES, ctx=1)
    weights = 10 * 100e6 + 50e6
    assert at.decode == pytest.approx(1 / (weights / 20e9 + 1024 * 2 * 10 / 20e9 + 8192 * 10 / 40e9), rel=1e-6)
    assert at.prompt == pytest.approx(100e9 / (2 * 10 * 100e6 / 0.5))  # the head is left out of the prompt
    assert not at.compute_bound and at.measured


def test_the_cache_costs_more_as_the_context_grows() -> None:
    work = dense()
    speeds = [predict(work, plan(), RATES, ctx).decode for ctx in (512, 2048, 8192)]
    assert speeds[0] > speeds[1] > speeds[2]
    assert predict(work, plan(), RATES, 512).bytes_per_token < predict(work, plan(), RATES, 8192).bytes_per_token


def test_moe_with_3b_active_beats_8b_dense_at_the_same_bandwidth() -> None:
    models = load_models()
    moe, dense8 = models["qwen3-30b-a3b-instruct-2507"], models["qwen3-8b"]
    fast = predict(workload_from_catalog(moe, moe.quants["Q4_K_M"]), plan(), RATES)
    slow = predict(workload_from_catalog(dense8, dense8.quants["Q4_K_M"]), plan(), RATES)
    assert fast.decode > 1.5 * slow.decode
    assert fast.bytes_per_token < slow.bytes_per_token / 2  # 8 of 128 experts read per token


def test_partial_offload_sits_between_cpu_and_gpu() -> None:
    work, gpu = dense(), DeviceRate(700e9, 100e12, 5e12)
    rates = Rates(CPU, gpu, 2)
    cpu_only, half, full = (predict(work, plan(n), rates).decode for n in (0, 5, -1))
    assert cpu_only < half < full
    assert not predict(work, plan(5), rates).measured  # the GPU's rate is a guess


def test_catalog_entries_dense_moe_and_hybrid_all_predict() -> None:
    for model in load_models().values():  # active_params None (dense), kv_layers set (Qwen3-Next)
        for quant in model.quants.values():
            estimate = predict(workload_from_catalog(model, quant), plan(), RATES)
            assert 0 < estimate.decode < 1000 and estimate.prompt > 0, model.id


def test_calibration_is_stored_reloaded_and_dropped_when_the_machine_changes() -> None:
    here = machine()
    assert not calibration.rates_for(here, cpu="EPYC").measured  # nothing stored: the hardware's guess
    calibration.store(here, {1: replace(CPU, bandwidth=11e9), 2: CPU}, cpu="EPYC")
    assert calibration.rates_for(here, 2, cpu="EPYC").cpu == CPU
    assert calibration.rates_for(here, 1, cpu="EPYC").cpu.bandwidth == 11e9
    assert calibration.rates_for(here, 4, cpu="EPYC").cpu.flops == 2 * CPU.flops  # FLOP/s scale with threads
    assert not calibration.rates_for(machine(ram=64), 2, cpu="EPYC").measured  # more RAM: a new fingerprint
    assert not calibration.rates_for(here, 2, cpu="Xeon").measured
    calibration.store(machine(ram=64), {2: CPU}, cpu="EPYC")  # the probe on the new machine replaces it
    assert calibration.rates_for(machine(ram=64), 2, cpu="EPYC").measured
    assert not calibration.rates_for(here, 2, cpu="EPYC").measured


def test_gpu_rates_from_the_table_or_a_stored_measurement() -> None:
    h200 = Device("CUDA0", "NVIDIA H200", "gpu", 140 * GiB, 141 * GiB, "nvidia")
    box = machine(gpus=(h200,))
    guessed = calibration.rates_for(box, cpu="EPYC").gpu
    assert guessed is not None and guessed.bandwidth == pytest.approx(4.8e12 * 0.8) and not guessed.measured
    assert guessed.layer_seconds > 0 and guessed.token_seconds > 0  # the fixed costs a fast GPU is bound by
    measured_gpu = DeviceRate(3.9e12, 300e12, 20e12, layer_seconds=70e-6)
    calibration.store(box, {2: CPU}, measured_gpu, cpu="EPYC")
    rates = calibration.rates_for(box, 2, cpu="EPYC")
    assert rates.gpu is not None and rates.gpu.bandwidth == 3.9e12 and rates.measured
    assert rates.gpu.layer_seconds == 70e-6


def _fake_probe(model: Path, threads: int, n_gpu_layers: int) -> ProbeRun:
    return ProbeRun(threads, 256, 0.5 / threads, (272.0, 0.02 / threads), (1040.0, 0.022 / threads))


def test_derive_inverts_the_formula() -> None:
    work = dense()
    truth = Rates(CPU)
    cpu_plan = plan(ctx=4096)
    t1, t2 = (1 / predict(work, cpu_plan, truth, c).decode for c in (272, 1040))
    prompt = 256 / predict(work, cpu_plan, truth).prompt
    got = derive(ProbeRun(1, 256, prompt, (272.0, t1), (1040.0, t2)), work)
    assert got.bandwidth == pytest.approx(CPU.bandwidth, rel=1e-6)
    assert got.attention_flops == pytest.approx(CPU.attention_flops, rel=1e-6)
    assert got.flops == pytest.approx(CPU.flops, rel=1e-6)
    noisy = derive(ProbeRun(1, 256, prompt, (272.0, t1), (1040.0, t1 * 0.9)), work)  # deep faster: noise
    assert noisy.bandwidth > 0 and noisy.attention_flops == pytest.approx(0.45 * noisy.flops)


def test_calibrate_probes_one_and_all_cores_and_stores(real_model: Path) -> None:
    cpu, gpu, _ = calibrate(real_model, machine(), probe=_fake_probe, load=lambda: 0.0)
    assert set(cpu) == {1, 2} and gpu is None and cpu[2].flops > cpu[1].flops
    assert calibration.stored(machine()) is not None


def test_recommendation_weighs_speed_and_says_why() -> None:
    models = load_models()
    pick = choose(machine(), models, Rates(DeviceRate(30e9, 200e9, 80e9, measured=True), threads=2), 8.0)
    assert pick is not None and pick.model.id == "qwen3.6-35b-a3b"
    assert "3.0B active parameters" in pick.reason and "most capable" in pick.reason
    slow = choose(machine(), models, Rates(DeviceRate(30e9, 200e9, 80e9, measured=True), threads=2), 20.0)
    assert slow is not None and slow.model.id != "qwen3.6-35b-a3b"
    assert "faster than Qwen3.6-35B-A3B" in slow.reason and "estimated" not in slow.reason
    nothing = choose(machine(), models, Rates(DeviceRate(1e9, 10e9, 5e9)), 50.0)
    assert nothing is not None and nothing.model.id == "qwen3.5-0.8b"  # fewer KV layers than Qwen3-0.6B
    assert "none reaches 50 tok/s" in nothing.reason and "estimated, not measured" in nothing.reason


def test_models_and_plan_show_the_speed(capsys: pytest.CaptureFixture[str]) -> None:
    assert print_models(machine(), RATES) == 0
    out = capsys.readouterr().out
    assert "speed" in out and "measured on this machine" in out
    row = next(line for line in out.splitlines() if line.startswith("qwen3-8b ") and "Q4_K_M" in line)
    assert " tok/s" in row and "~" in row
    assert print_plan("qwen3-30b-a3b:Q4_K_M", None, machine(), rates=RATES) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("speed: "))
    assert "decode ~" in line and "prompt ~" in line and "GB read per token" in line


def test_plan_predicts_at_the_thread_count_loads_will_use(monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """--threads (QWEN_CHAT_THREADS, as main sets it) or [engine] threads: the estimate is for that many threads,
    not for the machine's physical cores; without either, the physical cores."""
    def speed_line() -> str:
        assert print_plan("qwen3-8b:Q4_K_M", None, machine()) == 0
        return next(x for x in capsys.readouterr().out.splitlines() if x.startswith("speed: "))

    monkeypatch.delenv("QWEN_CHAT_THREADS", raising=False)
    assert f"{machine().physical_cores} CPU threads" in speed_line()
    monkeypatch.setenv("QWEN_CHAT_THREADS", "1")
    assert "; 1 CPU thread;" in speed_line()
