"""The peers benchmark: one epoch of the same fine-tuning, four ways, in one process.

    python benchmarks/peers.py --train-size 2048 --max-len 128 --device auto

On the same data (a seeded, label-stratified subset of CoLA train), the same model, batch
size, learning rate and number of steps:

  (a) tutorial      the tutorial's loop as written: every sentence padded to MAX_LEN, fp32,
                    ``loss.item()`` every step, torch AdamW (lr 2e-5, eps 1e-8), linear
                    schedule, clipping at 1.0
  (b) trainer       the Hugging Face Trainer as ``run_glue`` sets it up: padded to MAX_LEN
  (c) trainer-fast  the Trainer in the precision the harness's `auto` picks (bf16 on a GPU that
                    has it and on a CPU that computes it natively; else fp32), dynamic padding
                    (DataCollatorWithPadding; to a multiple of 8 in bf16 on a GPU, as run_glue does
                    for half precision) and length-grouped sampling
  (d) harness       ``harness.loop.train.fit`` with its best strategy (bucketed, no rounding on a
                    CPU, multiples of 8 on a GPU), precision `auto` as (c), fused AdamW

``--trainer-precision`` and ``--harness-precision`` override the precision of (c) and (d);
``auto`` is :func:`harness.loop.env.choose_precision`'s choice, the same as a suite's: on a
CPU with AVX512-BF16, AMX or Arm BF16, bf16 autocast (1.5-1.8x faster than fp32 there),
fp32 on a CPU without them (where bf16 is emulated and several times slower). (a) and (b)
stay fp32, as the tutorial and run_glue run.

Epoch time is the training loop only, device synchronised before each clock read; model
loading, tokenization and evaluation are outside it, for every peer. Each epoch is also
timed in process CPU seconds: on a machine shared with other jobs, with ``--threads 1``,
CPU seconds are the steadier measure of work. Prints a table with the ratios to (a) and
(c) and each peer's validation metric; ``--json`` writes the results.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

PEERS = ("tutorial", "trainer", "trainer-fast", "harness")


# ------------------------------------------------------------------------------ set-up


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="cola", help="a harness dataset plugin (default: cola)")
    p.add_argument("--train-size", type=int, default=2048, help="training examples (stratified subset; 0: all)")
    p.add_argument("--max-len", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-5, help="the tutorial's 2e-5 for every peer")
    p.add_argument("--model", default="minilm", help="minilm (embedded), an architecture with --init random, or a path")
    p.add_argument("--init", default="pretrained", choices=("pretrained", "random"))
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--peers", default=",".join(PEERS), help=f"comma-separated subset of {','.join(PEERS)}")
    p.add_argument("--compile", action="store_true", help="harness: torch.compile (compile time reported apart)")
    p.add_argument("--trainer-pad-multiple", type=int, default=None,
                   help="(c): DataCollatorWithPadding(pad_to_multiple_of=N); default 8 in bf16 on a GPU (run_glue's "
                   "choice for half precision), else none; 0: none")
    for peer in ("trainer", "harness"):
        p.add_argument(f"--{peer}-precision", choices=("auto", "fp32", "bf16"), default="auto",
                       help=f"({'cd'[peer == 'harness']}): auto is the harness's choice: bf16 where the GPU or "
                       "CPU computes it natively, else fp32")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--json", default="results/peers.json", help="where to write the results (default: results/peers.json)")
    args = p.parse_args(argv)
    unknown = [x for x in args.peers.split(",") if x not in PEERS]
    if unknown:
        p.error(f"unknown peer(s) {unknown}; choose from {', '.join(PEERS)}")
    return args


@dataclasses.dataclass
class Setup:
    args: argparse.Namespace
    device: torch.device
    trainer_bf16: bool  # (c)
    harness_bf16: bool  # (d)
    train_texts: list[str]
    train_labels: list[int]
    eval_texts: list[str]
    eval_labels: list[int]
    num_labels: int
    metric: str
    tokenizer: Any
    model_config: Any


def make_setup(args: argparse.Namespace) -> Setup:
    from harness.data import DataFiles
    from harness.loop.env import choose_precision, resolve_device
    from harness.loop.checkpoints import load_config, load_tokenizer
    from harness.registry import load_registry
    from harness.data.splits import stratified_subset

    device = torch.device(resolve_device(args.device))
    trainer_bf16, harness_bf16 = (
        choose_precision(choice, str(device)).precision == "bf16" for choice in (args.trainer_precision, args.harness_precision)
    )
    dataset_cls = load_registry().get("dataset", args.dataset).cls
    dataset = dataset_cls(dataset_cls.Options(), DataFiles(args.dataset))
    train, held_out = dataset.load("train"), dataset.load("validation")
    if args.train_size and args.train_size < len(train):
        # the same draw as the harness's dataset.subset.train (seed 0)
        idx = stratified_subset(np.asarray([e.label for e in train]), args.train_size, 0)
        train = [train[i] for i in idx]
    if any(e.text_pair is not None for e in train):
        raise SystemExit("peers.py compares single-sentence datasets (the tutorial's case)")
    return Setup(
        args, device, trainer_bf16, harness_bf16,
        [e.text for e in train], [e.label for e in train],
        [e.text for e in held_out], [e.label for e in held_out],
        dataset.num_labels, dataset.metrics[0],
        load_tokenizer(args.model, args.init, None),
        load_config(args.model, args.init),
    )


def hf_model(s: Setup):
    """A fresh AutoModelForSequenceClassification (the model the tutorial and Trainer use)."""
    from transformers import AutoModelForSequenceClassification

    from harness.loop.checkpoints import locate

    torch.manual_seed(s.args.seed)
    cfg = s.model_config.__class__.from_dict({**s.model_config.to_dict(), "num_labels": s.num_labels})
    if s.args.init == "random":
        model = AutoModelForSequenceClassification.from_config(cfg, attn_implementation="sdpa")
    else:
        model = AutoModelForSequenceClassification.from_pretrained(
            locate(s.args.model), num_labels=s.num_labels, attn_implementation="sdpa"
        )
    return model.to(s.device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def score(s: Setup, predictions: np.ndarray) -> float:
    from harness.stats import metrics

    return float(metrics.compute([s.metric], np.asarray(s.eval_labels), np.asarray(predictions))[s.metric])


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak(device: torch.device) -> int | None:
    return int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None


class EpochTimer:
    """Wall and process-CPU seconds of one epoch, the device synchronised at both ends."""

    def __init__(self, device: torch.device):
        self.device = device

    def start(self) -> None:
        sync(self.device)
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def stop(self) -> tuple[float, float]:
        sync(self.device)
        return time.perf_counter() - self.wall, time.process_time() - self.cpu


# ------------------------------------------------------------------------------ (a)


def run_tutorial(s: Setup) -> dict[str, Any]:
    """The tutorial's loop, as written (the tokenizer call modernised, nothing else)."""
    from torch.utils.data import DataLoader, RandomSampler, SequentialSampler, TensorDataset
    from transformers import get_linear_schedule_with_warmup

    def tensors(texts, labels):
        enc = s.tokenizer(texts, max_length=s.args.max_len, padding="max_length", truncation=True, return_tensors="pt")
        return TensorDataset(enc["input_ids"], enc["attention_mask"], torch.tensor(labels))

    train = tensors(s.train_texts, s.train_labels)
    held_out = tensors(s.eval_texts, s.eval_labels)
    generator = torch.Generator().manual_seed(s.args.seed)
    train_loader = DataLoader(train, sampler=RandomSampler(train, generator=generator), batch_size=s.args.batch_size)
    eval_loader = DataLoader(held_out, sampler=SequentialSampler(held_out), batch_size=s.args.batch_size)
    model = hf_model(s)
    optimizer = torch.optim.AdamW(model.parameters(), lr=s.args.lr, eps=1e-8)
    scheduler = get_linear_schedule_with_warmup(optimizer, num_warmup_steps=0, num_training_steps=len(train_loader))
    timer = EpochTimer(s.device)
    reset_peak(s.device)

    timer.start()
    model.train()
    total_loss = 0.0
    for batch in train_loader:
        b_input_ids, b_input_mask, b_labels = (t.to(s.device) for t in batch)
        model.zero_grad()
        outputs = model(b_input_ids, token_type_ids=None, attention_mask=b_input_mask, labels=b_labels)
        loss = outputs[0]
        total_loss += loss.item()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
    wall, cpu = timer.stop()
    memory = peak(s.device)

    t0 = time.perf_counter()
    model.eval()
    predictions = []
    for batch in eval_loader:
        b_input_ids, b_input_mask, _ = (t.to(s.device) for t in batch)
        with torch.no_grad():
            logits = model(b_input_ids, token_type_ids=None, attention_mask=b_input_mask)[0]
        predictions.append(logits.argmax(-1).cpu())
    eval_seconds = time.perf_counter() - t0
    real = sum(len(x) for x in s.tokenizer(s.train_texts, max_length=s.args.max_len, truncation=True)["input_ids"])
    return {
        "epoch_seconds": wall, "epoch_cpu_seconds": cpu, "eval_seconds": eval_seconds,
        "train_loss": total_loss / len(train_loader), "steps": len(train_loader),
        "real_tokens": real, "padded_tokens": len(s.train_texts) * s.args.max_len,
        "peak_memory_bytes": memory, "metric": score(s, torch.cat(predictions).numpy()), "precision": "fp32",
    }


# ------------------------------------------------------------------------------ (b), (c)


def training_arguments(s: Setup, out: Path, *, bf16: bool, group_by_length: bool):
    """TrainingArguments across transformers 5.x: 5.17 has ``group_by_length``, newer
    releases ``train_sampling_strategy='group_by_length'``; only known fields are passed."""
    from transformers import TrainingArguments

    known = {f.name for f in dataclasses.fields(TrainingArguments)}
    kwargs: dict[str, Any] = dict(
        output_dir=str(out), per_device_train_batch_size=s.args.batch_size, per_device_eval_batch_size=s.args.batch_size,
        learning_rate=s.args.lr, adam_epsilon=1e-8, weight_decay=0.0, max_grad_norm=1.0, num_train_epochs=1,
        lr_scheduler_type="linear", warmup_steps=0, seed=s.args.seed, bf16=bf16,
        eval_strategy="no", save_strategy="no", logging_strategy="no", report_to="none",
        disable_tqdm=True, dataloader_num_workers=0, use_cpu=s.device.type == "cpu",
    )
    if group_by_length:
        if "train_sampling_strategy" in known:
            kwargs["train_sampling_strategy"] = "group_by_length"
        else:
            kwargs["group_by_length"] = True
    return TrainingArguments(**{k: v for k, v in kwargs.items() if k in known})


class _ListDataset(torch.utils.data.Dataset):
    def __init__(self, features: list[dict[str, Any]]):
        self.features = features

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.features[i]


def _trainer_features(s: Setup, texts: list[str], labels: list[int], fast: bool) -> _ListDataset:
    """The Trainer's dataset: tokenized as run_glue does (padded to MAX_LEN unless ``fast``)."""
    padding = False if fast else "max_length"  # run_glue: pad_to_max_length
    enc = s.tokenizer(texts, max_length=s.args.max_len, padding=padding, truncation=True)
    return _ListDataset([{**{k: enc[k][i] for k in enc}, "labels": labels[i]} for i in range(len(texts))])


def _epoch_clock(s: Setup) -> Any:
    """A Trainer callback timing each epoch (device synchronised), peak memory reset at its start."""
    from transformers import TrainerCallback

    class Clock(TrainerCallback):
        def __init__(self):
            self.timer = EpochTimer(s.device)
            self.times: list[tuple[float, float]] = []

        def on_epoch_begin(self, args, state, control, **kw):
            reset_peak(s.device)
            self.timer.start()

        def on_epoch_end(self, args, state, control, **kw):
            self.times.append(self.timer.stop())

    return Clock()


def _trainer_collator(s: Setup, fast: bool, bf16: bool) -> Any:
    from transformers import DataCollatorWithPadding, default_data_collator

    if not fast:
        return default_data_collator
    multiple = s.args.trainer_pad_multiple
    # run_glue rounds to 8 for half precision: tensor cores; a CPU gains nothing from it
    multiple = (8 if bf16 and s.device.type == "cuda" else None) if multiple is None else (multiple or None)
    return DataCollatorWithPadding(s.tokenizer, pad_to_multiple_of=multiple)


def run_trainer(s: Setup, *, fast: bool) -> dict[str, Any]:
    import tempfile

    from transformers import Trainer
    from transformers.trainer_callback import PrinterCallback

    train = _trainer_features(s, s.train_texts, s.train_labels, fast)
    held_out = _trainer_features(s, s.eval_texts, s.eval_labels, fast)
    bf16 = fast and s.trainer_bf16
    collator = _trainer_collator(s, fast, bf16)
    clock = _epoch_clock(s)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(
            model=hf_model(s), args=training_arguments(s, Path(tmp), bf16=bf16, group_by_length=fast),
            train_dataset=train, data_collator=collator, callbacks=[clock],
        )
        trainer.remove_callback(PrinterCallback)  # it prints the final metrics dict
        result = trainer.train()
        memory = peak(s.device)
        t0 = time.perf_counter()
        prediction = trainer.predict(held_out)
        eval_seconds = time.perf_counter() - t0
    lengths = [sum(f["attention_mask"]) for f in train.features]
    padded = None if fast else len(lengths) * s.args.max_len
    if fast:  # what the length-grouped sampler and the collator pad to, replayed on the host
        padded = replay_padding(trainer, collator, lengths, s.args.batch_size)
    wall, cpu = clock.times[0]
    return {
        "epoch_seconds": wall, "epoch_cpu_seconds": cpu, "eval_seconds": eval_seconds,
        "train_loss": float(result.training_loss), "steps": int(result.global_step),
        "real_tokens": int(sum(lengths)), "padded_tokens": padded,
        "peak_memory_bytes": memory, "metric": score(s, np.argmax(prediction.predictions, axis=-1)),
        "precision": "bf16" if bf16 else "fp32",
    }


def replay_padding(trainer, collator, lengths: list[int], batch_size: int) -> int | None:
    """Padded tokens of one epoch of (c): the sampler's grouping (a fresh draw: the same
    statistics, not the same order) padded as the collator pads. None if the Trainer of
    this transformers version hides its sampler."""
    try:
        order = list(trainer._get_train_sampler())
    except Exception:  # a private method: absent or different in some versions
        return None
    multiple = collator.pad_to_multiple_of or 1
    total = 0
    for i in range(0, len(order), batch_size):
        group = order[i : i + batch_size]
        total += len(group) * (-(-max(lengths[j] for j in group) // multiple) * multiple)
    return total


# ------------------------------------------------------------------------------ (d)


def run_harness(s: Setup) -> dict[str, Any]:
    from harness.registry import load_registry
    from harness.records.summary import summarize
    from harness.config.suite import config_from_keys
    from harness.config.resolve import resolve_run
    from harness.loop.train import fit

    gpu = s.device.type == "cuda"
    defaults = {
        "model": s.args.model, "init": s.args.init, "dataset": s.args.dataset,
        "strategy": {"name": "bucketed", "options": {"pad_to_multiple_of": 8 if gpu else None}},
        "max_len": s.args.max_len, "batch_size": s.args.batch_size, "eval_batch_size": 4 * s.args.batch_size,
        "epochs": 1, "lr": s.args.lr, "seed": s.args.seed, "device": str(s.device),
        "precision": "bf16" if s.harness_bf16 else "fp32", "compile": s.args.compile,
        # compile happens in the warm-up steps, timed apart; without it no warm-up, as for the others
        "warmup_batches": 2 if s.args.compile else 0,
        "dataset.subset.train": s.args.train_size or None,
    }
    run = resolve_run(config_from_keys(defaults), load_registry(), Path.cwd())
    record = fit(run).to_dict()  # the record as stored
    if record["status"] != "ok":
        raise RuntimeError(f"harness run {record['status']}: {record.get('error')}")
    epoch = record["epochs"][0]
    summary = summarize(record)
    return {
        "epoch_seconds": epoch["train_seconds"], "epoch_cpu_seconds": epoch.get("train_cpu_seconds"),
        "eval_seconds": epoch["eval_seconds"], "train_loss": epoch["train_loss"], "steps": epoch["steps"],
        "real_tokens": epoch["real_tokens"], "padded_tokens": epoch["padded_tokens"],
        "peak_memory_bytes": epoch["peak_memory_bytes"] if gpu else None,
        "metric": record["metrics"][s.metric], "compile_seconds": record.get("compile_seconds"),
        "tflops": summary["tflops"], "strategy": run.config.strategy.model_dump(mode="json"),
        "precision": run.config.precision,
    }


# ------------------------------------------------------------------------------ main


def warm_up(s: Setup) -> None:
    """One forward and backward before any peer, so no peer pays for the process's first
    kernels (cuBLAS handles, allocator, thread pool)."""
    model = hf_model(s)
    ids = torch.randint(1000, 2000, (s.args.batch_size, s.args.max_len), device=s.device)
    model(ids, labels=torch.zeros(s.args.batch_size, dtype=torch.long, device=s.device)).loss.backward()
    sync(s.device)
    del model


def environment(s: Setup) -> dict[str, Any]:
    import transformers

    env = {
        "python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
        "device": str(s.device), "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    if s.device.type == "cuda":
        env["device_name"] = torch.cuda.get_device_name(s.device)
    else:
        from harness.loop.env import environment as harness_env

        env["device_name"] = harness_env(s.device)["cpu"]
    return env


def print_table(results: dict[str, dict[str, Any]], metric: str) -> None:
    from rich.console import Console
    from rich.table import Table

    base = results.get("tutorial", {}).get("epoch_seconds")
    fast = results.get("trainer-fast", {}).get("epoch_seconds")
    base_cpu = results.get("tutorial", {}).get("epoch_cpu_seconds")
    fast_cpu = results.get("trainer-fast", {}).get("epoch_cpu_seconds")
    table = Table(header_style="bold")
    for name in ("peer", "precision", "epoch s", "vs (a)", "vs (c)", "epoch cpu s", "cpu vs (a)", "cpu vs (c)",
                 "real tok/s", "pad waste", "eval s", "peak mem", metric):
        table.add_column(name, justify="left" if name == "peer" else "right")
    ratio = lambda ref, x: f"{ref / x:.2f}x" if ref and x else "—"  # noqa: E731
    for peer, r in results.items():
        waste = (1 - r["real_tokens"] / r["padded_tokens"]) if r.get("padded_tokens") else None
        table.add_row(
            f"({'abcd'[PEERS.index(peer)]}) {peer}", r["precision"], f"{r['epoch_seconds']:.2f}",
            ratio(base, r["epoch_seconds"]), ratio(fast, r["epoch_seconds"]),
            f"{r['epoch_cpu_seconds']:.1f}" if r.get("epoch_cpu_seconds") else "—",
            ratio(base_cpu, r.get("epoch_cpu_seconds")), ratio(fast_cpu, r.get("epoch_cpu_seconds")),
            f"{r['real_tokens'] / r['epoch_seconds']:,.0f}",
            f"{waste:.0%}" if waste is not None else "—", f"{r['eval_seconds']:.2f}",
            f"{r['peak_memory_bytes'] / 1e9:.2f} GB" if r.get("peak_memory_bytes") else "—",
            f"{r['metric']:.3f}",
        )
    Console(width=200).print(table)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    s = make_setup(args)
    runners: dict[str, Callable[[Setup], dict[str, Any]]] = {
        "tutorial": run_tutorial,
        "trainer": lambda s: run_trainer(s, fast=False),
        "trainer-fast": lambda s: run_trainer(s, fast=True),
        "harness": run_harness,
    }
    env = environment(s)
    print(f"peers: {args.dataset} train {len(s.train_texts)} / validation {len(s.eval_texts)}, MAX_LEN {args.max_len}, "
          f"batch {args.batch_size}, lr {args.lr}, model {args.model} ({args.init}), {env['device_name']}, "
          f"torch {env['torch']}, transformers {env['transformers']}, {env['torch_threads']} threads", flush=True)
    warm_up(s)
    results: dict[str, dict[str, Any]] = {}
    for peer in [p for p in PEERS if p in args.peers.split(",")]:
        print(f"  {peer} ...", end="", flush=True)
        results[peer] = runners[peer](s)
        print(f" {results[peer]['epoch_seconds']:.2f} s, {s.metric} {results[peer]['metric']:.3f}", flush=True)
    env["load_average_after"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    print_table(results, s.metric)
    out = {"args": vars(args), "env": env, "metric": s.metric, "results": results}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
        print(f"results: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
