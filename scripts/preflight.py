"""Check the device and the paths a reproduction needs (scripts/reproduce.py runs this as its
first stage, in a process of its own): the device, a bf16 matmul, the training step compiled and
eager as seed 0 builds it, a batch by each loader, a one-process NCCL (or gloo) group. Each
check is written to --preflight.out as it ends. Exit status: 0 (failed checks are recorded, not
fatal), 2 bad input.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ffcv_resnet.errors import cli, handle_sigterm, say  # noqa: E402


@cli
def main() -> None:
    handle_sigterm()
    import shlex
    from ffcv_resnet.config import parse
    from ffcv_resnet.device import resolve_device
    from ffcv_resnet.reproduce.preflight import PreflightSettings, preflight, write_checks
    cfg = parse(PreflightSettings, description=__doc__)
    p = cfg.preflight
    out = Path(p.out) if p.out else None
    checks = preflight(resolve_device(p.device), Path(cfg.data.dir), shlex.split(p.train_args),
                       p.smoke, (lambda c: write_checks(out, c)) if out else (lambda c: None))
    for c in checks:
        state = "ok" if c["ok"] else ("skipped" if c["ok"] is None else "FAILED")
        say(f"  {c['check']}: {state}: {c.get('detail') or c.get('error') or c['skipped']}")


if __name__ == "__main__":
    main()
