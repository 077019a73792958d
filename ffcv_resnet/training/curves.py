"""curves.png: a run's accuracy and loss per epoch, train and test, as in the seed's plot."""
from __future__ import annotations

from pathlib import Path

from matplotlib.ticker import MaxNLocator

from ..png import plt, save_figure


def plot_curves(history: list[dict], path: Path, run_id: str | None = None) -> None:
    """Accuracy and loss per epoch, train and test (the epochs that were evaluated)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    epochs = [h["epoch"] for h in history]
    evaluated = [h for h in history if h.get("test_accuracy") is not None]
    for ax, key, title in ((axes[0], "accuracy", "Accuracy"), (axes[1], "loss", "Loss")):
        ax.plot(epochs, [h[f"train_{key}"] for h in history], "o-", label="train")
        ax.plot([h["epoch"] for h in evaluated], [h[f"test_{key}"] for h in evaluated], "s-",
                label="test")
        ax.set(title=title, xlabel="epoch", yscale="log" if key == "loss" else "linear")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    save_figure(fig, path, run_id)
