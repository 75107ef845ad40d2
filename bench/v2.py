"""`python -m bench.v2`: the Open Inference Protocol's cost per image beside /generate's raw reply.

One `python -m service` (default settings, the shipped mnist-cdcgan), two closed-loop cases at
n=64 rows per request, run alternately (A B A B ...) on the same server so that drift hits both:
`POST /generate {"n": 64}` with `Accept: application/x-npy` (uint8 images), and
`POST /v2/models/mnist-cdcgan/infer` with z and y as binary tensors and the image back binary
(float32: 4x the bytes), as `tritonclient.http` sends it. Reports medians of images/s and of the
server's CPU per image, and the v2/generate ratio (the goal: v2 costs <= 1.10x per image).
Measure under the shared lock: `flock /work/helpers/cpu.lock python -m bench.v2`.
"""

from __future__ import annotations

import argparse
import json
import statistics

from modelformat.latent import latents_for_seeds, one_hot

from . import loadgen
from .suite import NPY, ROOT, server

MODEL = "mnist-cdcgan"


def v2_body(n: int, latent_dim: int = 100, num_classes: int = 10) -> tuple[bytes, dict[str, str]]:
    """A binary-tensor infer request of n rows (seeds 0..n-1, their drawn labels), as tritonclient
    builds it: the JSON header, then z's and y's little-endian bytes; its length in a header."""
    z, labels = latents_for_seeds(range(n), latent_dim, num_classes)
    y = one_hot(labels, num_classes)
    header = {
        "inputs": [
            {
                "name": "z",
                "shape": list(z.shape),
                "datatype": "FP32",
                "parameters": {"binary_data_size": z.nbytes},
            },
            {
                "name": "y",
                "shape": list(y.shape),
                "datatype": "FP32",
                "parameters": {"binary_data_size": y.nbytes},
            },
        ],
        "parameters": {"binary_data_output": True},
    }
    head = json.dumps(header).encode()
    return head + z.tobytes() + y.tobytes(), {"inference-header-content-length": str(len(head))}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.v2", description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=64, help="rows per request")
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=4.0, help="per run")
    ap.add_argument("--repeats", type=int, default=5, help="runs per case (alternating)")
    args = ap.parse_args(argv)
    body, v2_headers = v2_body(args.n)
    cases = {
        "generate_raw": ("/generate", json.dumps({"n": args.n}).encode(), {"accept": NPY}),
        "v2_binary": (f"/v2/models/{MODEL}/infer", body, v2_headers),
    }
    runs: dict[str, list[loadgen.RunResult]] = {name: [] for name in cases}
    with server("service", models=ROOT / "models") as (url, pid):
        for i in range(args.repeats):
            for name, (path, data, headers) in cases.items():
                r = loadgen.run(
                    loadgen.closed_loop(
                        url,
                        path,
                        data,
                        args.n,
                        args.concurrency,
                        args.seconds,
                        0.7,
                        server_pid=pid,
                        headers=headers,
                    )
                )
                assert r.ok and set(r.statuses) == {"200"}, (name, r.statuses)
                runs[name].append(r)
                cpu_ms = 1000 * (r.server_cpu_cores or 0) / r.images_per_s
                print(
                    f"run {i} {name:13s} {r.images_per_s:7.0f} img/s  server CPU {cpu_ms:.3f} ms/img",
                    flush=True,
                )
    rows = {}
    for name, rs in runs.items():
        rows[name] = {
            "images_per_s": statistics.median(r.images_per_s for r in rs),
            "server_cpu_ms_per_image": statistics.median(
                1000 * (r.server_cpu_cores or 0) / r.images_per_s for r in rs
            ),
            "p50_ms": statistics.median(r.p50_ms or 0 for r in rs),
        }
    a, b = rows["generate_raw"], rows["v2_binary"]
    print(f"\nn={args.n} c={args.concurrency}, {args.repeats} x {args.seconds:g} s each, medians:")
    print("| case | images/s | server CPU ms/image | p50 ms |\n| --- | ---: | ---: | ---: |")
    for name, row in rows.items():
        cpu, p50 = row["server_cpu_ms_per_image"], row["p50_ms"]
        print(f"| {name} | {row['images_per_s']:.0f} | {cpu:.3f} | {p50:.1f} |")
    print(
        f"v2 / generate raw: {a['images_per_s'] / b['images_per_s']:.3f}x time per image (throughput), "
        f"{b['server_cpu_ms_per_image'] / a['server_cpu_ms_per_image']:.3f}x server CPU per image"
    )


if __name__ == "__main__":
    main()
