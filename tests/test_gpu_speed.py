"""The GPU side of the speed model (planning/speed.py): the fixed costs per layer, per MoE layer and per token that
decide a fast GPU's decode speed, prompt batches with their fixed cost and the experts' slower products, their
defaults for known cards (calibration.py), and `calibrate --gpu` (speed_probe.py, cli/reports.py)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from qwen_chat.catalog.loader import load_models
from qwen_chat.cli.reports import run_calibrate
from qwen_chat.planning import calibration, speed_probe
from qwen_chat.planning.planner import Plan, Weights
from qwen_chat.planning.speed import (
    PROMPT_BATCH,
    DeviceRate,
    Rates,
    Workload,
    kv_bytes,
    predict,
    prompt_batch_seconds,
    weights_touched,
    workload_from_catalog,
)
from qwen_chat.planning.speed_probe import GpuProbeRun, derive_gpu
from qwen_chat.system.hardware import Device, Machine

GiB = 1 << 30
CPU = DeviceRate(bandwidth=20e9, flops=100e9, attention_flops=40e9, measured=True)


def gpu_plan(ctx: int = 8192, n_gpu: int = -1, n_cpu_moe: int = 0) -> Plan:
    return Plan("Q4_K_M", ctx, n_gpu, n_cpu_moe, "f16", True, 0, 0, 0, 0, 0, True)


def machine(gpus: tuple[Device, ...] = (), offload: bool = True) -> Machine:
    return Machine(int(128 * GiB), int(120 * GiB), 16, 32, gpus, offload and bool(gpus))


def card(name: str, gib: int) -> Device:
    return Device("CUDA0", name, "gpu", (gib - 1) * GiB, gib * GiB, "nvidia")


def speeds(gpu_name: str, gib: int, model_id: str, quant: str = "Q4_K_M") -> tuple[float, float]:
    """(decode, prompt) tok/s of a catalog model fully on the card, from the table's defaults."""
    rates = calibration.rates_for(machine((card(gpu_name, gib),)), cpu="test CPU")
    model = load_models()[model_id]
    estimate = predict(workload_from_catalog(model, model.quants[quant]), gpu_plan(), rates)
    assert not estimate.measured  # the defaults stay labelled "estimated" until calibrate --gpu runs there
    return estimate.decode, estimate.prompt


# Public llama.cpp figures for cards of these classes (calibration.py's comment has them): a regression to a
# bandwidth-only model (an H200's ~950 tok/s for 30B-A3B, 70,000 prompt tok/s) falls outside every range.
@pytest.mark.parametrize(("gpu", "gib", "model_id", "decode", "prompt"), [
    ("NVIDIA H200", 141, "qwen3-0.6b", (250, 650), (20_000, 200_000)),
    ("NVIDIA H200", 141, "qwen3-8b", (150, 250), (4_000, 20_000)),
    ("NVIDIA H200", 141, "qwen3-30b-a3b", (100, 300), (1_500, 10_000)),
    ("NVIDIA GeForce RTX 4090", 24, "qwen3-0.6b", (250, 700), (20_000, 200_000)),
    ("NVIDIA GeForce RTX 4090", 24, "qwen3-8b", (100, 170), (5_000, 15_000)),
    ("NVIDIA GeForce RTX 4090", 24, "qwen3-30b-a3b", (130, 250), (1_500, 8_000)),
])
def test_table_cards_predict_in_the_range_of_public_figures(gpu: str, gib: int, model_id: str,
                                                            decode: tuple[int, int], prompt: tuple[int, int]) -> None:
    quant = "Q8_0" if model_id == "qwen3-0.6b" else "Q4_K_M"
    got_decode, got_prompt = speeds(gpu, gib, model_id, quant)
    assert decode[0] <= got_decode <= decode[1], (gpu, model_id, got_decode)
    assert prompt[0] <= got_prompt <= prompt[1], (gpu, model_id, got_prompt)


def moe(layers: int = 8) -> Workload:
    return Workload(Weights((20_000_000,) * layers, (400_000_000,) * layers, 60_000_000, 60_000_000, exact=True),
                    0.0625, 0.56, 1024, layers, 8192)


def test_fixed_costs_add_per_layer_per_moe_layer_and_per_token() -> None:
    work, base = moe(), DeviceRate(3e12, 200e12, 50e12)
    fixed = replace(base, layer_seconds=80e-6, moe_layer_seconds=50e-6, token_seconds=0.4e-3)
    plain, slowed = (1 / predict(work, gpu_plan(), Rates(CPU, r), ctx=1024).decode for r in (base, fixed))
    assert slowed - plain == pytest.approx(8 * 80e-6 + 8 * 50e-6 + 0.4e-3, rel=1e-6)
    # experts of the first 4 layers in RAM: those 4 MoE dispatches run on the CPU, whose fixed costs are 0
    half = 1 / predict(work, gpu_plan(n_cpu_moe=4), Rates(CPU, fixed), ctx=1024).decode
    half_plain = 1 / predict(work, gpu_plan(n_cpu_moe=4), Rates(CPU, base), ctx=1024).decode
    assert half - half_plain == pytest.approx(8 * 80e-6 + 4 * 50e-6 + 0.4e-3, rel=1e-6)


def test_prompt_batches_pay_a_fixed_cost_and_slow_expert_products() -> None:
    work, base = moe(), DeviceRate(3e12, 200e12, 50e12)
    plain = predict(work, gpu_plan(), Rates(CPU, base)).prompt
    tiled = predict(work, gpu_plan(), Rates(CPU, replace(base, expert_batch_tokens=256))).prompt
    per_expert = PROMPT_BATCH * 0.0625  # 32 tokens per expert in a batch of 512: an eighth of the 256
    dense = 8 * 20e6 / 0.56 * 2 * PROMPT_BATCH / 200e12
    experts = 8 * 400e6 * 0.0625 / 0.56 * 2 * PROMPT_BATCH / 200e12
    assert PROMPT_BATCH / plain == pytest.approx(dense + experts, rel=1e-6)
    assert PROMPT_BATCH / tiled == pytest.approx(dense + experts * 256 / per_expert, rel=1e-6)
    fixed = predict(work, gpu_plan(), Rates(CPU, replace(base, batch_layer_seconds=1e-4))).prompt
    assert PROMPT_BATCH / fixed == pytest.approx(dense + experts + 8 * 1e-4, rel=1e-6)


def test_a_large_batch_multiplies_ram_resident_weights_on_the_gpu() -> None:
    """llama.cpp's op offload: with some layers in RAM, a prompt batch of 32 tokens or more copies their weights
    to the GPU over PCIe and multiplies there; a decode step (one token) still reads them on the CPU."""
    work = moe()
    gpu = DeviceRate(3e12, 200e12, 50e12, upload_bandwidth=25e9)
    rates = Rates(CPU, gpu)
    experts_in_ram = 4 * 400e6  # every expert of the first 4 layers: a 512-token batch touches them all
    gpu_compute = 2 * PROMPT_BATCH * 8 * (20e6 + 400e6 * 0.0625) / 0.56 / 200e12
    batch = prompt_batch_seconds(work, gpu_plan(n_cpu_moe=4), rates)
    assert batch == pytest.approx(experts_in_ram / 25e9 + gpu_compute, rel=1e-3)
    small = prompt_batch_seconds(work, gpu_plan(n_cpu_moe=4), rates, n=16)  # below 32: the CPU computes
    assert small > 16 * 2 * 4 * 400e6 * 0.0625 / 0.56 / CPU.flops
    no_upload = prompt_batch_seconds(work, gpu_plan(n_cpu_moe=4), Rates(CPU, replace(gpu, upload_bandwidth=0)))
    assert no_upload > 10 * batch  # without op offload the 2-core CPU does the experts' products itself


def test_the_cpu_has_no_fixed_costs_so_its_figures_stay_as_they_were() -> None:
    rate = calibration.default_cpu(machine(), 2)
    assert (rate.layer_seconds, rate.moe_layer_seconds, rate.token_seconds, rate.batch_layer_seconds,
            rate.expert_batch_tokens, rate.upload_bandwidth) == (0, 0, 0, 0, 0, 0)
    work = moe()
    at = predict(work, gpu_plan(n_gpu=0), Rates(CPU), ctx=1)
    weights = weights_touched(work.weights, work.expert_fraction)
    assert at.prompt == pytest.approx(100e9 / (2 * (weights - 60e6) / 0.56))  # 2·P'/F per token, as before


def _probe_run(work: Workload, truth: DeviceRate, vocab: int = 151936) -> GpuProbeRun:
    """What the GPU probe would time on a device that follows the formula exactly (its logits cross PCIe at the
    H200 guess's 50 GB/s)."""
    layers, moe_layers = len(work.weights.layer_dense), sum(1 for e in work.weights.layer_experts if e)
    head = work.weights.output
    weights = weights_touched(work.weights, work.expert_fraction)

    def step(ctx: float, logits: bool = True) -> tuple[float, float]:
        read = weights - (0 if logits else head) + kv_bytes(work, round(ctx))
        attention = ctx * work.attention_flops_per_layer * work.kv_layers / truth.attention_flops
        copy = 4 * vocab / 50e9 if logits else 0.0
        return ctx, read / truth.bandwidth + attention + layers * truth.layer_seconds + \
            moe_layers * truth.moe_layer_seconds + copy

    small, full = ((n, prompt_batch_seconds(work, gpu_plan(), Rates(CPU, truth), n)) for n in (128, PROMPT_BATCH))
    return GpuProbeRun((small, full), step(272.0), step(272.0, logits=False), step(1040.0), truth.token_seconds,
                       vocab)


def test_derive_gpu_inverts_the_formula() -> None:
    work = moe()
    truth = DeviceRate(3e12, 150e12, 20e12, measured=True, layer_seconds=70e-6, moe_layer_seconds=70e-6 * 50 / 80,
                       token_seconds=0.5e-3, batch_layer_seconds=90e-6, expert_batch_tokens=256)
    guess = calibration.default_gpu(card("NVIDIA H200", 141))
    got = derive_gpu(_probe_run(work, truth), work, guess)
    for field in ("bandwidth", "flops", "attention_flops", "layer_seconds", "moe_layer_seconds", "token_seconds",
                  "batch_layer_seconds"):
        assert getattr(got, field) == pytest.approx(getattr(truth, field), rel=1e-3), field
    assert got.measured
    # noise that makes the head free keeps the guess's bandwidth rather than an absurd one
    run = _probe_run(work, truth)
    noisy = derive_gpu(replace(run, no_logits=run.shallow), work, guess)
    assert noisy.bandwidth == guess.bandwidth and noisy.layer_seconds > 0


def test_calibrate_gpu_stores_the_fixed_costs_and_they_come_back(real_model: Path) -> None:
    box = machine((card("NVIDIA H200", 141),))
    truth = DeviceRate(3e12, 150e12, 20e12, layer_seconds=70e-6, token_seconds=0.5e-3)

    def cpu_probe(model: Path, threads: int, n_gpu_layers: int) -> speed_probe.ProbeRun:
        return speed_probe.ProbeRun(threads, 256, 0.5, (272.0, 0.02), (1040.0, 0.022))

    def gpu_probe(model: Path, threads: int) -> GpuProbeRun:
        from qwen_chat.gguf.files import read_model_info
        from qwen_chat.planning.speed import workload_from_gguf

        return _probe_run(workload_from_gguf(read_model_info(model)), truth)

    _, gpu, _ = speed_probe.calibrate(real_model, box, gpu=True, probe=cpu_probe, gpu_probe=gpu_probe,
                                      load=lambda: 0.0)
    assert gpu is not None and gpu.layer_seconds == pytest.approx(70e-6, rel=1e-2)
    again = calibration.rates_for(box, cpu=calibration.cpu_name()).gpu
    assert again is not None and again.measured and again.layer_seconds == pytest.approx(gpu.layer_seconds)
    assert again.token_seconds == pytest.approx(0.5e-3)


def test_an_old_calibration_file_without_fixed_costs_still_loads(tmp_path: Path) -> None:
    box = machine((card("NVIDIA H200", 141),))
    old_entry = {"cpu": {"2": {"bandwidth": 21e9, "flops": 110e9, "attention_flops": 40e9}},
                 "gpu": {"bandwidth": 9e12, "flops": 300e12, "attention_flops": 20e12}, "model": "probe.gguf"}
    path = calibration._path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({calibration.fingerprint(box, "EPYC"): old_entry}), encoding="utf-8")
    rates = calibration.rates_for(box, 2, cpu="EPYC")
    assert rates.cpu.measured and rates.cpu.bandwidth == 21e9 and rates.cpu.layer_seconds == 0
    # the old GPU figure folded the fixed costs into its bandwidth for its probe model only: the table's guess
    assert rates.gpu is not None and not rates.gpu.measured and rates.gpu.bandwidth == pytest.approx(3.84e12)


def test_calibrate_gpu_without_a_usable_gpu_says_so_and_probes_the_cpu(
        real_model: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    asked: list[bool] = []

    def fake(model: Path, box: Machine, gpu: bool = False) -> speed_probe.Calibration:
        asked.append(gpu)
        return speed_probe.Calibration({2: CPU}, None)

    monkeypatch.setattr(speed_probe, "calibrate", fake)
    assert run_calibrate(real_model, gpu=True, machine=machine()) == 0
    out = capsys.readouterr().out
    assert "--gpu: no GPU found here" in out and "CPU, 2 threads" in out and asked == [False]
    built_without = machine((card("NVIDIA GeForce RTX 4090", 24),), offload=False)
    assert run_calibrate(real_model, gpu=True, machine=built_without) == 0
    out = capsys.readouterr().out
    assert "RTX 4090 found, but this llama-cpp-python was built without GPU support" in out and asked[-1] is False
