"""The lecture's plain Adam script: a DataLoader over a TensorDataset, nn.Linear, autograd, Adam with a
StepLR(20, 0.95) schedule, a tqdm bar over 500 epochs, no tracking. The baseline of figure P2b.

The lecture's text holds the SGD loop this extends (benchmarks/lecture.py); the Adam variant follows
the lecture's recipe (Adam lr 1e-3, batch 16, StepLR(step_size=20, gamma=0.95)). It trains on the
same 700 rows descentlab trains on (data=linear's 70% split of N=1000), so both do the same steps.

    python -m benchmarks.lecture_adam [epochs]
"""

import sys

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from tqdm import tqdm

from benchmarks.lecture import make_problem, residuals

if __name__ == "__main__":
    num_epochs = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    theta, X, Y = make_problem(n=1000, m=2)
    dataset = TensorDataset(X[:700], Y[:700])
    train_loader = DataLoader(dataset, batch_size=16, shuffle=True)
    model = nn.Linear(2, 1, bias=False)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=20, gamma=0.95)
    for _epoch in tqdm(range(num_epochs)):
        for X_batch, Y_batch in train_loader:
            optimizer.zero_grad()
            loss = residuals(model, X_batch, Y_batch)  # primal
            loss.backward()  # backprop / reverse-mode AD
            optimizer.step()
        scheduler.step()
    print(f"||theta - theta_hat|| = {torch.norm(theta - model.weight.squeeze())}")
