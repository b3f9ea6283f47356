"""``pydet train``: train a detector on the built-in synthetic shapes or a COCO-format dataset, then
evaluate it with COCO's metrics (faster-coco-eval).

One process::

    pydet train                                   # SSDLite-MobileNetV2 on SyntheticShapes
    pydet train --data /data/coco --model retinanet_resnet50_fpn --epochs 12 --batch-size 4

Several processes (PyTorch's DistributedDataParallel; gloo on CPU, nccl on GPU)::

    torchrun --nproc_per_node=2 -m pydet.train --epochs 4

Every epoch writes ``OUT/last.pt`` atomically (see :mod:`pydet.checkpoint`); ``--resume OUT/last.pt``
continues from it (same model, data and schedule). Only rank 0 logs and writes; evaluation runs on
every rank's share of the validation set and is gathered to rank 0.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from pydet.checkpoint import CheckpointError, load_checkpoint, save_checkpoint, set_image_size
from pydet.data import SyntheticShapes, coco_ground_truth, collate
from pydet.evaluation import DetectionEvaluator

MODEL_NAMES = ("ssdlite320_mobilenet_v2", "ssd300_vgg16", "ssd512_vgg16", "retinanet_resnet50_fpn")


class TrainingError(RuntimeError):
    """A user-facing problem (bad path, incompatible checkpoint): printed as one line, no traceback."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="pydet train", description="Train a detector on synthetic shapes or a COCO-format dataset."
    )
    p.add_argument("--model", default="ssdlite320_mobilenet_v2", choices=MODEL_NAMES)
    p.add_argument(
        "--data",
        default="synthetic",
        help="'synthetic' (pydet.data.SyntheticShapes) or a COCO-format directory: either "
        "annotations/instances_{train,val}2017.json with train2017/ and val2017/, or "
        "train.json + train/ and val.json + val/",
    )
    p.add_argument("--train-images", type=int, default=2500, help="synthetic: images in the train split")
    p.add_argument("--val-images", type=int, default=250, help="synthetic: images in the val split")
    p.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="SSD models: input size (square); synthetic images are drawn at this size. "
        "Default: 192 on synthetic data, the model's own size otherwise",
    )
    p.add_argument(
        "--object-size",
        type=float,
        nargs=2,
        default=(32.0, 160.0),
        metavar=("MIN", "MAX"),
        help="synthetic: object sizes in px (log-uniform); the default suits SSDLite's anchors, whose "
        "smallest is 0.2 of the image side",
    )
    p.add_argument(
        "--width-mult",
        type=float,
        default=None,
        help="ssdlite320_mobilenet_v2 width multiplier (default: 0.5 on synthetic data, 1.0 otherwise)",
    )
    p.add_argument("--weights-backbone", help="plain classification weights for the backbone (path or URL)")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=16, help="per process")
    p.add_argument("--optimizer", choices=("adamw", "sgd"), default="adamw")
    p.add_argument(
        "--lr",
        type=float,
        default=None,
        help="peak learning rate (default adamw 5e-3 on synthetic data, 1e-3 otherwise; sgd 10x those)",
    )
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--warmup-iters", type=int, default=100, help="linear warm-up, then cosine decay to 0")
    p.add_argument("--amp", action="store_true", help="mixed precision (bfloat16 on CPU, float16 on CUDA)")
    p.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm across processes (distributed)")
    p.add_argument("--workers", type=int, default=1, help="data-loading worker processes")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads for each process")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/train", help="directory for last.pt and metrics.json")
    p.add_argument("--resume", help="a checkpoint written by pydet train (e.g. runs/train/last.pt)")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (smoke tests)")
    p.add_argument("--no-eval", action="store_true", help="skip the final COCO evaluation")
    args = p.parse_args(argv)
    if args.lr is None:
        args.lr = (5e-3 if args.data == "synthetic" else 1e-3) * (1 if args.optimizer == "adamw" else 10)
    synthetic_ssdlite = args.data == "synthetic" and args.model == "ssdlite320_mobilenet_v2"
    if args.image_size is None and args.data == "synthetic" and args.model.startswith("ssd"):
        args.image_size = 192
    if args.width_mult is None:
        args.width_mult = 0.5 if synthetic_ssdlite else 1.0
    for name in ("epochs", "batch_size", "train_images", "val_images"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.image_size is not None and (args.image_size < 32 or not args.model.startswith("ssd")):
        p.error("--image-size must be >= 32 and applies to the SSD models only")
    if args.width_mult != 1.0 and args.model != "ssdlite320_mobilenet_v2":
        p.error("--width-mult applies to ssdlite320_mobilenet_v2 only")
    return args


class _Distributed:
    """Rank/world size from torchrun's environment; a single process otherwise."""

    def __init__(self, device: torch.device):
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.enabled = self.world_size > 1
        if self.enabled:
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def close(self) -> None:
        if self.enabled:
            dist.destroy_process_group()

    def log(self, *args, **kwargs) -> None:
        """``print`` on rank 0; the other ranks stay quiet."""
        if self.main:
            print(*args, **kwargs)

    def progress(self, iterable, desc: str):
        """A progress bar over ``iterable``, shown on rank 0 only."""
        from tqdm import tqdm

        return tqdm(iterable, desc=desc, disable=not self.main, dynamic_ncols=True, leave=False)


def _coco_split(root: Path, split: str) -> tuple[Path, Path]:
    """(annotation json, image folder) of a split in either supported layout."""
    layouts = [
        (root / "annotations" / f"instances_{split}2017.json", root / f"{split}2017"),
        (root / f"{split}.json", root / split),
    ]
    for ann, images in layouts:
        if ann.is_file():
            return ann, images
    raise TrainingError(
        f"--data {root}: no {split} annotations (looked for {layouts[0][0]} and {layouts[1][0]})"
    )


def build_datasets(args: argparse.Namespace) -> tuple[Dataset, Dataset, list[str]]:
    if args.data == "synthetic":
        size = args.image_size or 320
        kw = {
            "image_size": size,
            "seed": args.seed,
            "min_size": args.object_size[0],
            "max_size": args.object_size[1],
        }
        train = SyntheticShapes(args.train_images, split="train", **kw)
        val = SyntheticShapes(args.val_images, split="val", **kw)
        return train, val, list(SyntheticShapes.classes)
    from pydet.data import CocoDetection

    root = Path(args.data)
    if not root.is_dir():
        raise TrainingError(f"--data {root}: not a directory (and not 'synthetic')")
    train = CocoDetection(*reversed(_coco_split(root, "train")))
    val = CocoDetection(*reversed(_coco_split(root, "val")))
    if train.classes != val.classes:
        raise TrainingError(f"--data {root}: the train and val splits have different categories")
    return train, val, list(train.classes)


def build_model(args: argparse.Namespace, num_classes: int) -> tuple[nn.Module, dict]:
    from pydet.models import MODELS

    kwargs: dict = {"num_classes": num_classes + 1}
    if args.model == "ssdlite320_mobilenet_v2" and args.width_mult != 1.0:
        kwargs["width_mult"] = args.width_mult
    model = MODELS[args.model](**kwargs, weights_backbone=args.weights_backbone)
    set_image_size(model, args.image_size)
    return model, kwargs


class _RandomHorizontalFlip(Dataset):
    """Flips half the training images (and their boxes), chosen by a per-epoch seeded stream."""

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset, self.seed, self.epoch = dataset, seed, 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        image, target = self.dataset[index]
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch) * 1_000_003 + index)
        if torch.rand((), generator=g) < 0.5:
            width = image.shape[-1]
            boxes = target["boxes"]
            image = image.flip(-1)
            target = dict(
                target,
                boxes=torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], 1),
            )
        return image, target


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up from 0.001 to 1 over ``warmup`` steps, then cosine decay to 0 at ``total``."""
    if step < warmup:
        return 0.001 + (1 - 0.001) * step / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _autocast(args, device: torch.device):
    if not args.amp:
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.float16 if device.type == "cuda" else torch.bfloat16)


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _rank_weight_digests(model: nn.Module) -> list[str]:
    """Every rank's SHA-256 of its parameters' and buffers' bytes: all equal when the ranks are in sync."""
    digest = hashlib.sha256()
    for value in model.state_dict().values():
        digest.update(value.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    digests: list = [None] * dist.get_world_size()
    dist.all_gather_object(digests, digest.hexdigest())
    return digests


@torch.inference_mode()
def evaluate(model: nn.Module, loader: DataLoader, ground_truth: dict | None, device, args, progress):
    """Detections for every rank's share of the validation set, gathered; metrics on rank 0 (the one
    given the ground truth), ``None`` elsewhere."""
    model.eval()
    evaluator = DetectionEvaluator(ground_truth or {"categories": [], "annotations": []})
    for images, targets in progress(loader, "eval"):
        with _autocast(args, device):
            detections = model([i.to(device) for i in images])
        detections = [{k: v.float() if k != "labels" else v for k, v in d.items()} for d in detections]
        evaluator.update([t["image_id"] for t in targets], detections)
    evaluator.gather()
    return evaluator.compute(verbose=True) if ground_truth is not None else None


def train(args: argparse.Namespace) -> dict:
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dist_env = _Distributed(device)
    try:
        if device.type == "cuda" and dist_env.enabled:
            device = torch.device("cuda", dist_env.local_rank)
            torch.cuda.set_device(device)
        if args.threads:
            torch.set_num_threads(args.threads)
        return _train(args, device, dist_env)
    finally:
        dist_env.close()


def _train(args, device: torch.device, dist_env: _Distributed) -> dict:
    out_dir = Path(args.out)
    checkpoint = _load_resume_checkpoint(args)
    torch.manual_seed(args.seed)
    train_set, val_set, classes = build_datasets(args)
    _check_checkpoint_classes(args, checkpoint, classes)
    model, model_kwargs = _build_training_model(args, classes, checkpoint, device, dist_env)
    loaders = _build_loaders(args, train_set, val_set, dist_env)
    optimization = _build_optimization(args, model, len(loaders.train), device, checkpoint)
    start_epoch = checkpoint["epoch"] if checkpoint is not None else 0

    dist_env.log(_describe_run(args, model, classes, train_set, val_set, device, dist_env), flush=True)
    started = time.perf_counter()
    step = start_epoch * len(loaders.train)
    for epoch in range(start_epoch, args.epochs):
        if step >= optimization.total_steps:
            break
        step = _train_one_epoch(args, model, loaders, optimization, device, dist_env, epoch, step)
        if dist_env.main:
            _save_last_checkpoint(out_dir, args, model, model_kwargs, classes, epoch + 1, optimization)
    train_seconds = time.perf_counter() - started
    metrics: dict = {"train_seconds": round(train_seconds, 1), "steps": step}
    if dist_env.enabled:
        metrics["rank_weight_digests"] = _synchronise_ranks(model)
    if not args.no_eval:
        results = _evaluate_val_split(args, model, loaders.val, val_set, device, dist_env)
        if dist_env.main:
            metrics.update(results)
            dist_env.log(
                f"COCO bbox on {len(val_set)} val images: mAP@[.5:.95] {metrics['mAP']:.3f}, "
                f"mAP@.5 {metrics['mAP50']:.3f} (trained {train_seconds:.0f} s, "
                f"total {time.perf_counter() - started:.0f} s)",
                flush=True,
            )
    if dist_env.main:
        _write_metrics(out_dir, metrics, dist_env)
    return metrics


def _load_resume_checkpoint(args) -> dict | None:
    """The ``--resume`` checkpoint (``None`` without one), checked against this run's model and image size."""
    if not args.resume:
        return None
    try:
        checkpoint = load_checkpoint(args.resume)
    except CheckpointError as e:
        raise TrainingError(str(e)) from None
    if checkpoint["model"] != args.model or checkpoint.get("image_size") != args.image_size:
        raise TrainingError(
            f"--resume {args.resume}: the checkpoint is for {checkpoint['model']} at image size "
            f"{checkpoint.get('image_size')}, but this run asks for {args.model} at {args.image_size}"
        )
    return checkpoint


def _check_checkpoint_classes(args, checkpoint: dict | None, classes: list[str]) -> None:
    if checkpoint is not None and checkpoint["classes"] != classes:
        raise TrainingError(
            f"--resume {args.resume}: the checkpoint has classes {checkpoint['classes']}, the data has {classes}"
        )


def _build_training_model(
    args, classes: list[str], checkpoint: dict | None, device: torch.device, dist_env: _Distributed
) -> tuple[nn.Module, dict]:
    """The model and its constructor's keyword arguments; on ``device`` with the checkpoint's weights
    when resuming, and wrapped in DistributedDataParallel (after SyncBatchNorm, if asked) when distributed."""
    model, model_kwargs = build_model(args, len(classes))
    if checkpoint is not None:
        model.load_state_dict(checkpoint["state_dict"])
    if args.sync_bn and device.type != "cuda":
        raise TrainingError("--sync-bn needs CUDA devices (PyTorch's SyncBatchNorm runs on GPUs only)")
    if args.sync_bn and dist_env.enabled:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device)
    if dist_env.enabled:
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    return model, model_kwargs


@dataclass
class _Loaders:
    train: DataLoader
    val: DataLoader  # this rank's share of the validation set
    flipped: _RandomHorizontalFlip  # the training set; its epoch picks the flipped images
    sampler: DistributedSampler | None  # None: a single process, the train loader shuffles


def _build_loaders(args, train_set: Dataset, val_set: Dataset, dist_env: _Distributed) -> _Loaders:
    flipped = _RandomHorizontalFlip(train_set, args.seed)
    sampler = (
        DistributedSampler(flipped, dist_env.world_size, dist_env.rank, shuffle=True, seed=args.seed)
        if dist_env.enabled
        else None
    )
    generator = torch.Generator().manual_seed(args.seed)
    loader_kw = {
        "collate_fn": collate,
        "num_workers": args.workers,
        "persistent_workers": args.workers > 0,
    }
    train_loader = DataLoader(
        flipped,
        args.batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        drop_last=True,
        generator=generator,
        **loader_kw,
    )
    # Each rank evaluates every world_size-th image: no padding, so no image is counted twice.
    val_share = Subset(val_set, range(dist_env.rank, len(val_set), dist_env.world_size))
    val_loader = DataLoader(val_share, args.batch_size, **loader_kw)
    if len(train_loader) == 0:
        raise TrainingError(
            f"the training set has {len(train_set)} images, fewer than one batch of {args.batch_size} per process"
        )
    return _Loaders(train_loader, val_loader, flipped, sampler)


@dataclass
class _Optimization:
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler  # disabled (a pass-through) unless float16 autocast on CUDA
    total_steps: int  # the schedule's length: all epochs, or --max-steps if fewer

    def step(self, loss: torch.Tensor) -> None:
        """Backward pass, optimizer step and learning-rate step for one batch's loss."""
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()


def _build_optimization(
    args, model: nn.Module, steps_per_epoch: int, device: torch.device, checkpoint: dict | None
) -> _Optimization:
    """Optimizer, schedule and gradient scaler for ``model``, in the checkpoint's state when resuming."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]  # biases and norm scales: no weight decay
    groups = [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if args.optimizer == "adamw":
        optimizer = torch.optim.AdamW(groups, lr=args.lr)
    else:
        optimizer = torch.optim.SGD(groups, lr=args.lr, momentum=0.9, nesterov=True)
    total_steps = args.epochs * steps_per_epoch
    if args.max_steps is not None:
        total_steps = min(total_steps, args.max_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, min(args.warmup_iters, total_steps // 2), total_steps)
    )
    scaler = torch.amp.GradScaler(device.type, enabled=args.amp and device.type == "cuda")
    if checkpoint is not None:
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        if checkpoint.get("scaler"):
            scaler.load_state_dict(checkpoint["scaler"])
    return _Optimization(optimizer, scheduler, scaler, total_steps)


def _describe_run(
    args,
    model: nn.Module,
    classes: list[str],
    train_set: Dataset,
    val_set: Dataset,
    device: torch.device,
    dist_env: _Distributed,
) -> str:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return (
        f"pydet train: {args.model} ({trainable / 1e6:.2f} M parameters), "
        f"{len(classes)} classes, {len(train_set)} train / {len(val_set)} val images"
        f"{f' at {args.image_size}x{args.image_size}' if args.image_size else ''}, {dist_env.world_size} "
        f"process(es) on {device}, {torch.get_num_threads()} threads each, batch {args.batch_size} per process"
    )


def _train_one_epoch(
    args,
    model: nn.Module,
    loaders: _Loaders,
    optimization: _Optimization,
    device: torch.device,
    dist_env: _Distributed,
    epoch: int,
    step: int,
) -> int:
    """One pass over the training set, cut short at the schedule's last step; returns the step reached."""
    model.train()
    loaders.flipped.epoch = epoch
    if loaders.sampler is not None:
        loaders.sampler.set_epoch(epoch)
    epoch_start, seen, loss_sum, batches = time.perf_counter(), 0, 0.0, 0
    bar = dist_env.progress(loaders.train, f"epoch {epoch + 1}/{args.epochs}")
    for images, targets in bar:
        loss = _batch_loss(args, model, images, targets, device, step)
        optimization.step(loss)
        step += 1
        seen += len(images) * dist_env.world_size
        loss_sum, batches = loss_sum + loss.item(), batches + 1
        bar.set_postfix(
            loss=f"{loss_sum / batches:.3f}",
            img_s=f"{seen / (time.perf_counter() - epoch_start):.1f}",
            lr=f"{optimization.scheduler.get_last_lr()[0]:.2e}",
        )
        if step >= optimization.total_steps:
            break
    elapsed = time.perf_counter() - epoch_start
    dist_env.log(
        f"epoch {epoch + 1}/{args.epochs}: loss {loss_sum / max(1, batches):.4f}, "
        f"{seen / elapsed:.1f} images/s, {elapsed:.0f} s",
        flush=True,
    )
    return step


def _batch_loss(args, model: nn.Module, images, targets, device: torch.device, step: int) -> torch.Tensor:
    """The model's summed training losses on one batch, which must be finite."""
    images = [i.to(device, non_blocking=True) for i in images]
    targets = [{k: (v.to(device) if torch.is_tensor(v) else v) for k, v in t.items()} for t in targets]
    with _autocast(args, device):
        losses = model(images, targets)
    loss = sum(losses.values())
    if not torch.isfinite(loss):
        raise TrainingError(f"the loss became {loss.item()} at step {step}; lower --lr")
    return loss


def _save_last_checkpoint(
    out_dir: Path,
    args,
    model: nn.Module,
    model_kwargs: dict,
    classes: list[str],
    epochs_done: int,
    optimization: _Optimization,
) -> None:
    save_checkpoint(
        out_dir / "last.pt",
        {
            "model": args.model,
            "model_kwargs": model_kwargs,
            "image_size": args.image_size,
            "classes": classes,
            "state_dict": _unwrap(model).state_dict(),
            "epoch": epochs_done,
            "optimizer": optimization.optimizer.state_dict(),
            "scheduler": optimization.scheduler.state_dict(),
            "scaler": optimization.scaler.state_dict() if optimization.scaler.is_enabled() else None,
            "args": vars(args),
        },
    )


def _synchronise_ranks(model: nn.Module) -> list[str]:
    """Rank 0's buffers on every rank; returns every rank's weight digest, which must all be equal."""
    # DDP keeps parameters in sync but each rank's BatchNorm statistics saw only its own last batch:
    # use rank 0's (the ones the checkpoint holds) everywhere, so every rank evaluates one model.
    for buffer in _unwrap(model).buffers():
        dist.broadcast(buffer, 0)
    digests = _rank_weight_digests(_unwrap(model))
    if len(set(digests)) != 1:
        raise TrainingError(f"the processes' weights diverged: {digests}")
    return digests


def _evaluate_val_split(
    args,
    model: nn.Module,
    val_loader: DataLoader,
    val_set: Dataset,
    device: torch.device,
    dist_env: _Distributed,
) -> dict | None:
    """COCO metrics of the whole validation set on rank 0, ``None`` on the other ranks."""
    ground_truth = coco_ground_truth(val_set) if dist_env.main else None
    return evaluate(model, val_loader, ground_truth, device, args, dist_env.progress)


def _write_metrics(out_dir: Path, metrics: dict, dist_env: _Distributed) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    dist_env.log(f"wrote {out_dir / 'last.pt'} and {out_dir / 'metrics.json'}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        train(args)
    except (TrainingError, FileNotFoundError, ValueError) as e:
        print(f"pydet train: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
