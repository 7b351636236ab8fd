"""Training the CNN teacher of the compression branch (spec step 1): cross entropy on the target task, with
class imbalance handled by loss weights or class-balanced sampling (`teacher.balance`)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from tqdm import tqdm

from pipeline import optim
from pipeline.config import TeacherParams
from pipeline.data import TaskData
from pipeline.compression import data as D
from pipeline.models.classifier import image_input


def train_teacher(model: torch.nn.Module, task: TaskData, tp: TeacherParams, device: torch.device, live=None) -> float:
    """Train `model` in place; returns the last step's loss."""
    labels = task.train_labels
    num_classes = len(task.classes)
    steps = D.steps_for(len(labels), tp.batch_size, tp.epochs)
    optimizer = optim.adamw(model.parameters(), tp.lr, tp.weight_decay)
    schedule = optim.warmup_cosine(optimizer, max(1, steps // 20), steps)
    weight = D.class_weights(labels, num_classes).to(device) if tp.balance == "weights" else None
    generator = torch.Generator().manual_seed(tp.seed)
    model.train()
    loss = torch.zeros(())
    order = D.batches(labels, tp.batch_size, steps, tp.seed, tp.balance)
    for indices in tqdm(order, total=steps, desc=f"teacher {type(model).__name__}"):
        x = D.apply_flips(image_input(task.train_images[indices].to(device)), D.random_flips(len(indices), generator, tp.flip))
        loss = F.cross_entropy(model(x), labels[indices].to(device), weight=weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if live is not None:
            live.log_metric("loss/ce", loss.item())
            live.next_step()
    model.eval()
    return float(loss.item())
