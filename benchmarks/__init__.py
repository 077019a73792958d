"""The benchmark suites; `SUITES` names them in the order the result pages list them."""

SUITES = ("prepare", "loader", "gradcam", "train", "dynamics", "epoch", "startup", "scaling")
