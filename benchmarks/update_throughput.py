"""One Flow-GRPO update vs TRL's GRPOTrainer loss on the same tiny model and the same batch.

A real rollout of the tiny preset (16 queries x 8 trajectories on AgentFlow-Search-v0) is
collected once and saved; then each variant runs in its own fresh process (so peak memory is
its own) and performs one full update (forward, backward, clip, optimizer step) over every
planner turn of that batch:

- ``flow_grpo (packed)``: learners.flow_grpo as the tiny preset runs it: the turns of a
  trajectory scored in one sequence, output layer only at action tokens;
- ``flow_grpo (per turn)``: the same with ``pack_turns=False`` (one sequence per turn);
- ``trl GRPOTrainer``: TRL's ``GRPOTrainer._compute_loss`` (its GRPO loss with per-turn samples
  left-padded prompt + right-padded completion, as TRL lays them out), same micro-batch size.

Throughput is action (trained) tokens per second of the timed update (the second; the first warms
up allocator, kernels and optimizer state). Peak memory is measured per update relative to the
RSS just before it, so model, data and env set-up are excluded: ``peak RSS growth`` is a
steady-state update's (activations, gradients, temporaries; a third, untimed update),
``first update`` the warm-up's (also what is created once). Before each measured update freed
memory is handed back to the OS (``malloc_trim``), so the baseline does not depend on what glibc
happened to retain (without it the growth varied 130-400 MB run to run for the same update); the
timed update is kept out of this because faulting the pages back in costs time.

How the peak is read: Linux keeps a high-water mark of the RSS (``VmHWM``) that ``echo 5 >
/proc/self/clear_refs`` resets, so the child resets it just before an update and reads it just
after: exact, free, and blind to the loading peak that made the process-lifetime ``ru_maxrss``
useless here (it read 0 growth for every variant: loading peaked higher than any update). Where
the reset is not allowed (old kernels, other OSes) a psutil thread samples the RSS every 1 ms
instead (it can miss spikes shorter than that; both agreed within ~10% here); the
``memory_method`` field says which was used. TRL is a benchmark-only dependency (``pip install
trl``).

    python -m benchmarks.update_throughput [--quick] [--repeats 3]
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import pickle
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

import numpy as np
import torch

if __package__ in (
    None,
    "",
):  # run as a script (python benchmarks/x.py): make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import machine_info
from tools.log_excerpt import log_excerpt

VARIANTS = ("flow_grpo_packed", "flow_grpo_per_turn", "trl_grpo")


_MB = 2**20


def _status_kb(field: str) -> int:
    """A ``kB`` field of /proc/self/status (VmRSS, VmHWM)."""
    found = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    if found is None:
        raise OSError(f"/proc/self/status has no {field}")
    return int(found.group(1))


def _reset_hwm() -> bool:
    """Reset the kernel's peak-RSS mark (Linux >= 4.0); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        _status_kb("VmHWM")
    except OSError:
        return False
    return True


def _release_free_memory() -> None:
    """Hand memory freed by earlier work back to the OS (glibc keeps it otherwise), so the RSS
    before an update does not depend on what the allocator happened to retain."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


class PeakRSS:
    """Peak RSS of this process while the block runs, and its growth over the RSS at entry."""

    def __init__(self, interval_s: float = 0.001) -> None:
        import psutil  # type: ignore[import-untyped]

        self._proc = psutil.Process()
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.method = ""
        self.before = self.peak = 0

    def _sample(self) -> None:
        while not self._stop.wait(self._interval_s):
            self.peak = max(self.peak, self._proc.memory_info().rss)

    def __enter__(self) -> Self:
        _release_free_memory()
        self.before = self.peak = self._proc.memory_info().rss
        if _reset_hwm():
            self.method = "kernel VmHWM reset"
        else:
            self.method = f"psutil sampling every {self._interval_s * 1000:g} ms"
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, self._proc.memory_info().rss)
        else:
            self.peak = _status_kb("VmHWM") * 1024

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.before) / _MB


def measure_update(update: Callable[[], object]) -> dict[str, Any]:
    """Three updates: a warm-up (its peak memory is the first update's), a timed one (nothing else
    runs: no trim, no sampling, a warm allocator), then one more for the steady-state peak."""
    with PeakRSS() as first:
        update()  # warm-up: allocator pools, kernels, optimizer state
    t0 = time.perf_counter()
    update()
    seconds = time.perf_counter() - t0
    with PeakRSS() as steady:
        update()
    return {
        "seconds": seconds,
        "peak_rss_growth_mb": steady.growth_mb,
        "peak_rss_mb": steady.peak / _MB,
        "first_update_peak_rss_growth_mb": first.growth_mb,
        "memory_method": steady.method,
    }


def collect_batch(path: Path, queries: int, group: int) -> None:
    from learners.envs import make_vector_env
    from learners.flow_grpo.advantages import compute_advantages
    from learners.flow_grpo.config import make_config
    from learners.flow_grpo.trainer import load_policy
    from learners.policy import SamplingSettings
    from learners.rollout import collect_groups

    cfg = make_config("tiny")
    policy = load_policy(cfg)
    envs = make_vector_env(cfg.env, queries * group)
    try:
        batch = collect_groups(
            envs,
            policy,
            list(envs.tasks[:queries]),
            group,
            SamplingSettings(1.0, 1.0, 64),
            np.random.default_rng(0),
        )
    finally:
        envs.close()
    adv = compute_advantages("flow_grpo", batch.advantage_inputs())
    # Zero-advantage turns are kept: both sides process the identical batch.
    path.write_bytes(pickle.dumps({"samples": batch.samples, "advantages": adv}))


def run_flow_grpo(data: dict[str, Any], pack: bool, micro: int) -> dict[str, float]:
    from learners.flow_grpo.config import make_config
    from learners.flow_grpo.trainer import FlowGRPOTrainer

    cfg = make_config(
        "tiny",
        overrides={
            "algo.pack_turns": pack,
            "algo.mini_batches": 1,
            "algo.micro_batch_size": micro,
            "env.num_tasks": 120,
            "env.eval_tasks": 10,
            "rollout.queries_per_step": 1,
            "rollout.group_size": 2,
            "output_dir": tempfile.mkdtemp(),
        },
    )
    trainer = FlowGRPOTrainer(cfg)
    samples, adv = data["samples"], data["advantages"]
    try:
        out = measure_update(lambda: trainer.update(samples, adv, np.random.default_rng(0)))
    finally:
        trainer.close()
    return {**out, "action_tokens": sum(len(s.response_ids) for s in samples)}


def trl_update_step(
    model: Any,
    tokenizer: Any,
    samples: list[Any],
    advantages: np.ndarray,
    micro: int,
    *,
    max_completion_length: int = 64,
    lr: float = 5e-4,
) -> Callable[[], None]:
    """One full update with TRL's GRPO loss (``GRPOTrainer._compute_loss``) over per-turn samples:
    forward, backward, clip, AdamW step, ``micro`` samples per forward, on the model's device and
    in its dtype (TRL's own autocast is off: both sides of a comparison run the same arithmetic).
    """
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    device = next(model.parameters()).device
    args = GRPOConfig(
        output_dir=tempfile.mkdtemp(),
        per_device_train_batch_size=8,
        num_generations=8,
        max_completion_length=max_completion_length,
        beta=0.0,
        loss_type="bnpo",
        report_to="none",
        use_cpu=device.type == "cpu",
        learning_rate=lr,
        epsilon=0.2,
        logging_steps=1000,
        save_strategy="no",
        # TRL's configs default to bf16=True: on CPU that autocasts to bf16, which is
        # emulated (~14x slower) on CPUs without bf16 instructions and changes the
        # arithmetic; both sides of this comparison run in the model's own dtype.
        bf16=False,
        fp16=False,
    )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=lambda completions, **_: [0.0] * len(completions),
        args=args,
        train_dataset=Dataset.from_dict({"prompt": ["x"] * 8}),
        processing_class=tokenizer,
    )
    trainer.current_gradient_accumulation_steps = 1  # normally set inside Trainer.train()
    optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)

    def step() -> None:
        model.train()
        optim.zero_grad(set_to_none=True)
        for start in range(0, len(samples), micro):
            part = samples[start : start + micro]
            inputs = _trl_inputs(
                part, advantages[start : start + micro], tokenizer.pad_token_id, device
            )
            trainer._compute_loss(model, inputs).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()

    return step


def run_trl(data: dict[str, Any], micro: int) -> dict[str, float]:
    from learners.flow_grpo.config import make_config
    from learners.flow_grpo.trainer import load_policy

    policy = load_policy(make_config("tiny"))
    samples, adv = data["samples"], data["advantages"]
    step = trl_update_step(policy.model, policy.tokenizer, samples, adv, micro)
    return {**measure_update(step), "action_tokens": sum(len(s.response_ids) for s in samples)}


def _trl_inputs(
    samples: list[Any], adv: np.ndarray, pad: int, device: torch.device | str = "cpu"
) -> dict[str, torch.Tensor]:
    """TRL's layout of per-turn samples: left-padded prompts, right-padded completions."""
    p_len = max(len(s.prompt_ids) for s in samples)
    c_len = max(len(s.response_ids) for s in samples)
    prompt = torch.full((len(samples), p_len), pad)
    pmask = torch.zeros_like(prompt)
    comp = torch.full((len(samples), c_len), pad)
    cmask = torch.zeros_like(comp)
    old = torch.zeros((len(samples), c_len))
    for r, s in enumerate(samples):
        prompt[r, p_len - len(s.prompt_ids) :] = torch.tensor(s.prompt_ids)
        pmask[r, p_len - len(s.prompt_ids) :] = 1
        comp[r, : len(s.response_ids)] = torch.tensor(s.response_ids)
        cmask[r, : len(s.response_ids)] = 1
        old[r, : len(s.logprobs)] = torch.tensor(s.logprobs)
    inputs = {
        "prompt_ids": prompt,
        "prompt_mask": pmask,
        "completion_ids": comp,
        "completion_mask": cmask,
        "advantages": torch.as_tensor(adv, dtype=torch.float32),
        "old_per_token_logps": old,
        "num_items_in_batch": cmask.sum(),
    }
    return {k: v.to(device) for k, v in inputs.items()}


def _versions(*names: str) -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def child(variant: str, data_path: str, micro: int) -> None:
    torch.set_num_threads(1)
    data = pickle.loads(Path(data_path).read_bytes())
    if variant == "trl_grpo":
        out = run_trl(data, micro)
    else:
        out = run_flow_grpo(data, variant == "flow_grpo_packed", micro)
    print(json.dumps(out))


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console
    from rich.table import Table

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 queries x 8, one repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--micro-batch-size", type=int, default=64)
    parser.add_argument("--out", default="benchmarks/results/update_throughput.json")
    parser.add_argument("--child", nargs=2, metavar=("VARIANT", "DATA"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child[0], args.child[1], args.micro_batch_size)
        return 0
    queries, repeats = (4, 1) if args.quick else (16, args.repeats)
    data_path = Path(tempfile.mkdtemp()) / "batch.pkl"
    collect_batch(data_path, queries, 8)
    rows = []
    for variant in VARIANTS:
        runs = []
        for _ in range(repeats):
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "benchmarks.update_throughput",
                    "--child",
                    variant,
                    str(data_path),
                    "--micro-batch-size",
                    str(args.micro_batch_size),
                ],
                capture_output=True,
                text=True,
                timeout=1800,
                check=False,
            )
            if done.returncode != 0:
                raise RuntimeError(f"{variant} failed:\n{log_excerpt(done.stderr, max_chars=2000)}")
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
        best = min(runs, key=lambda r: r["seconds"])
        rows.append(
            {
                "variant": variant,
                "seconds": best["seconds"],
                "action_tokens": best["action_tokens"],
                "tokens_per_s": best["action_tokens"] / best["seconds"],
                "peak_rss_growth_mb": max(r["peak_rss_growth_mb"] for r in runs),
                "first_update_peak_rss_growth_mb": max(
                    r["first_update_peak_rss_growth_mb"] for r in runs
                ),
                "memory_method": runs[0]["memory_method"],
                "runs": runs,
            }
        )
    table = Table(
        title=f"one update over {queries}x8 trajectories (tiny model, CPU, 1 thread); "
        f"memory: peak RSS growth over the RSS before the update ({rows[0]['memory_method']})"
    )
    for col in ("variant", "update s", "action tokens/s", "peak RSS growth MB", "first update MB"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            r["variant"],
            f"{r['seconds']:.2f}",
            f"{r['tokens_per_s']:,.0f}",
            f"{r['peak_rss_growth_mb']:.1f}",
            f"{r['first_update_peak_rss_growth_mb']:.1f}",
        )
    Console().print(table)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "quick": args.quick,
                "queries": queries,
                "group_size": 8,
                "rows": rows,
                "machine": machine_info(
                    torch_threads=torch.get_num_threads(),
                    packages=_versions("transformers", "trl", "accelerate"),
                ),
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
