"""ffcv_resnet: fast ResNet-18 training on CIFAR-10 with FFCV, and batched Grad-CAM of its errors.

The package's top level imports neither ffcv nor numba; the modules that stream betons do.
"""
from .gradcam import CamResult, grad_cam
from .model import resnet18
from .sources import CLASSES

__all__ = ["resnet18", "grad_cam", "CamResult", "CLASSES"]
