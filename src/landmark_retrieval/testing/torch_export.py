"""A small random-weight PyTorch embedding network, saved offline as TorchScript and as a state dict.

:func:`tiny_torch_cnn` builds it (two 3x3 stride-2 ReLU convs, a 1x1 projection to ``dim``
channels; ``forward`` gives the feature map (1, dim, h, w), ``embed`` its global average);
``extract.embedding.model_class = "landmark_retrieval.testing.torch_export:tiny_torch_cnn"``
rebuilds it from a state dict. The weights come from a seeded torch generator, so a seed always
gives the same network. PyTorch is imported only when a helper is called.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

FACTORY = "landmark_retrieval.testing.torch_export:tiny_torch_cnn"


def tiny_torch_cnn(dim: str = "16", seed: str = "0") -> Any:
    """The network (a ``torch.nn.Module`` in eval mode); arguments are strings, as
    ``extract.embedding.model_args`` passes them."""
    import torch

    class TinyCNN(torch.nn.Module):
        def __init__(self, dim: int):
            super().__init__()
            self.conv1 = torch.nn.Conv2d(3, 8, 3, stride=2, padding=1)
            self.conv2 = torch.nn.Conv2d(8, 16, 3, stride=2, padding=1)
            self.proj = torch.nn.Conv2d(16, dim, 1)

        def forward(self, x):
            return self.proj(torch.relu(self.conv2(torch.relu(self.conv1(x)))))

        @torch.jit.export
        def embed(self, x):
            return self.forward(x).mean(dim=(2, 3))

    generator = torch.Generator().manual_seed(int(seed))
    net = TinyCNN(int(dim))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.3)
    return net.eval()


def export_torch_model(directory: Path, dim: int = 16, seed: int = 0) -> Dict[str, Path]:
    """``{"torchscript": model.pt, "state_dict": weights.pth}`` of the same network in ``directory``."""
    import torch

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    net = tiny_torch_cnn(str(dim), str(seed))
    out = {"torchscript": directory / "model.pt", "state_dict": directory / "weights.pth"}
    torch.jit.save(torch.jit.script(net), str(out["torchscript"]))
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, str(out["state_dict"]))
    return out
