#!/usr/bin/python3
"""Trains the bundled example model: a Fashion-MNIST CNN with one large fully connected layer,
and exports it as ONNX (opset 17, IR 8) with its test accuracy.

    /usr/bin/python3 tools/train_fashion_mnist.py [--epochs 6] [--out models]

Needs Debian's python3-torch and dataset-fashion-mnist (tools/install-deps.sh --train).
Inputs are the 28 x 28 images scaled to [0, 1] (what qsl-run feeds from IDX files); the
output is 10 logits. Deterministic for a given torch build (seeded, single-threaded data order).
Writes OUT/fashion_mnist_cnn.onnx and OUT/fashion_mnist_cnn.json (accuracy, settings).
"""
import argparse
import gzip
import json
import os
import time

import numpy as np
import torch
from torch import nn

DATA = "/usr/share/datasets/fashion-mnist"


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


def load(split):
    images = read_idx(os.path.join(DATA, f"{split}-images-idx3-ubyte.gz"))
    labels = read_idx(os.path.join(DATA, f"{split}-labels-idx1-ubyte.gz"))
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    return x, torch.from_numpy(labels.astype(np.int64))


class Net(nn.Module):
    """conv 32 -> pool -> conv 64 + BN -> pool -> FC 3136 x 512 (the large layer) -> FC 10."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(64 * 7 * 7, 512), nn.ReLU(), nn.Dropout(0.3),
            nn.Linear(512, 10))

    def forward(self, x):
        return self.classifier(self.features(x))


def accuracy(model, x, y):
    model.eval()
    with torch.no_grad():
        correct = sum((model(x[i:i + 1000]).argmax(1) == y[i:i + 1000]).sum().item()
                      for i in range(0, len(x), 1000))
    return correct / len(x)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--out", default="models")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count() or 1)
    x_train, y_train = load("train")
    x_test, y_test = load("t10k")
    model = Net()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, args.epochs)
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(0)
    start = time.time()
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(x_train), generator=generator)
        for i in range(0, len(order), 128):
            batch = order[i:i + 128]
            optimizer.zero_grad()
            loss = loss_fn(model(x_train[batch]), y_train[batch])
            loss.backward()
            optimizer.step()
        schedule.step()
        print(f"epoch {epoch + 1}: loss {loss.item():.4f}, test accuracy "
              f"{accuracy(model, x_test, y_test):.4f}, {time.time() - start:.0f} s", flush=True)
    model.eval()
    os.makedirs(args.out, exist_ok=True)
    onnx_path = os.path.join(args.out, "fashion_mnist_cnn.onnx")
    torch.onnx.export(model, torch.zeros(1, 1, 28, 28), onnx_path, opset_version=17,
                      input_names=["image"], output_names=["logits"],
                      dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
                      do_constant_folding=True)
    result = {
        "model": "fashion_mnist_cnn.onnx",
        "dataset": "Fashion-MNIST (Debian dataset-fashion-mnist), test set of 10000 images",
        "input": "image [batch, 1, 28, 28] float, pixels / 255",
        "output": "logits [batch, 10]",
        "fp32_test_accuracy": accuracy(model, x_test, y_test),
        "epochs": args.epochs,
        "parameters": sum(p.numel() for p in model.parameters()),
        "torch": torch.__version__,
        "command": "/usr/bin/python3 tools/train_fashion_mnist.py --epochs %d" % args.epochs,
        "training_seconds": round(time.time() - start),
    }
    with open(os.path.join(args.out, "fashion_mnist_cnn.json"), "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
