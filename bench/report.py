"""Results JSON -> PNG plots (docs/bench/) and the generated part of docs/BENCHMARKS.md.

The generated tables sit between `<!-- bench:begin -->` and `<!-- bench:end -->`; the
hand-written text around them (findings, profiles, the choice of defaults) is kept.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


def _f(v, fmt="{:.0f}") -> str:
    return "-" if v is None else fmt.format(v)


def _statuses(s: dict) -> str:
    bad = {k: v for k, v in s.items() if k != "200"}
    return ", ".join(f"{k}: {v}" for k, v in sorted(bad.items())) or "none"


def _find(rows: list[dict], case: str, c: int) -> dict | None:
    return next((r for r in rows if r["case"] == case and r["concurrency"] == c), None)


def best_ref(ref: dict | None, kind: str) -> tuple[float, str, float, int] | None:
    """(images/s, line, images per CPU-second, batch) of the faster layout of `kind` at the
    largest batch of an in-process reference (bench/inproc.py): the goals' batch, 64."""
    if not ref:
        return None
    b = str(max(ref["batches"]))
    rows = [
        (pts[b], line, ref["per_cpu_s"][line][b], int(b))
        for line, pts in ref["images_per_s"].items()
        if line.startswith(kind + "_") and b in pts
    ]
    return max(rows) if rows else None


def _measured(r: dict | None) -> bool:
    return bool(r) and "skipped" not in r and bool(r.get("requests_per_s"))


def _ratio_row(name: str, goal: float, svc: dict | None, ref, svc_what: str, ref_what: str):
    """A goal 'service images/s >= goal x in-process reference' (ref: `best_ref`'s tuple;
    `ref_what` may name the batch as {batch})."""
    if svc and "skipped" in svc:
        return (name, None, f"skipped: {svc['skipped']}")
    if not _measured(svc) or not ref:
        return (name, None, "not measured in this run")
    v, line, ref_eff, batch = ref
    x = svc["images_per_s"] / v
    ref_what = ref_what.format(batch=batch)
    txt = f"{svc['images_per_s']:.0f} vs {v:.0f} images/s = {x:.2f}x ({svc_what} vs {ref_what}, `{line}`)"
    if svc.get("server_cpu_cores"):
        eff = svc["images_per_s"] / svc["server_cpu_cores"]
        txt += f"; per CPU-second: {eff:.0f} vs {ref_eff:.0f} images = {eff / ref_eff:.2f}x"
    return (name, x >= goal, txt)


def targets(results: dict) -> list[tuple[str, bool | None, str]]:
    """The goals (issue 15) and the overload checks: (name, met or None when not measured, figures)."""
    rows: list[tuple[str, bool | None, str]] = []
    svc = results.get("service", [])
    ref = results.get("inproc")
    s64, n64 = _find(svc, "n1", 64), _find(results.get("naive_strong", []), "n1", 64)
    name = "n=1, c=64: >= 2.0x the strong naive server's req/s, p99 <= 0.5x its p99"
    if _measured(s64) and _measured(n64) and s64["p99_ms"] and n64["p99_ms"]:
        x, p = s64["requests_per_s"] / n64["requests_per_s"], s64["p99_ms"] / n64["p99_ms"]
        rows.append(
            (
                name,
                x >= 2.0 and p <= 0.5,
                f"{s64['requests_per_s']:.0f} vs {n64['requests_per_s']:.0f} req/s = {x:.2f}x; "
                f"p99 {s64['p99_ms']:.1f} vs {n64['p99_ms']:.1f} ms = {p:.2f}x",
            )
        )
    else:
        rows.append((name, None, "not measured in this run (parts `service` and `naive`)"))
    rows.append(
        _ratio_row(
            "n=16, c=16, PNG replies: >= 0.95x the in-process whole work",
            0.95,
            _find(svc, "n16", 16),
            best_ref(ref, "png"),
            "service",
            "z + ORT at batch {batch} + PNG + base64 in process, the faster layout",
        )
    )
    rows.append(
        _ratio_row(
            "n=16, c=16, raw replies: >= 0.85x in-process ONNX Runtime alone",
            0.85,
            _find(svc, "n16raw", 16),
            best_ref(ref, "ort"),
            "service, `.npy`",
            "ORT alone at batch {batch}, the faster layout",
        )
    )
    s1 = _find(svc, "n1", 1)
    name = "n=1, c=1: p50 <= 2.0 ms"
    if _measured(s1) and s1["p50_ms"] is not None:
        rows.append((name, s1["p50_ms"] <= 2.0, f"p50 {s1['p50_ms']:.2f} ms"))
    else:
        rows.append((name, None, "not measured in this run"))
    host = results.get("host") or {}
    rows.append(
        _ratio_row(
            "near-free model, n=64, raw replies: >= 0.8x the in-process host-work loop",
            0.8,
            _find(host.get("service", []), "n64raw", 16),
            best_ref(host.get("inproc"), "raw"),
            "service, c=16",
            "z + near-free ORT + `.npy` at batch {batch} in process, the faster layout",
        )
    )
    if results.get("provider") == "cuda":  # the GPU goals: the service against bare CUDA ORT
        for reply, case, goal in (("raw", "n16raw", 0.5), ("PNG", "n16", 0.25)):
            rows.append(
                _ratio_row(
                    f"GPU, n=16, c=16, {reply} replies: >= {goal}x bare CUDA ONNX Runtime",
                    goal,
                    _find(svc, case, 16),
                    best_ref(ref, "ort"),
                    "service",
                    "ORT alone at batch {batch}, the faster layout",
                )
            )
    for case, o in results.get("open", {}).items():
        ov = o.get("overload")
        if not ov:
            continue
        st = ov["statuses"]
        other = {k: v for k, v in st.items() if k not in ("200", "503")}
        deadline_ms = 10_000.0
        ok = (
            not other
            and ov["retry_after_missing"] == 0
            and (ov["p99_ms"] or 0) < deadline_ms
            and st.get("200", 0) > 0
        )
        rows.append(
            (
                f"overload ({case}, open loop at 2x the knee for {ov['duration_s']:g} s)",
                ok,
                f"offered {ov['offered_per_s']:.0f}/s: {st.get('200', 0)} ok "
                f"(p99 {_f(ov['p99_ms'], '{:.0f}')} ms; deadline 10,000 ms), {st.get('503', 0)} x 503 "
                f"({ov['retry_after_missing']} without Retry-After, "
                f"p99 {_f(ov['rejected_p99_ms'], '{:.1f}')} ms), "
                f"other: {_statuses(other) if other else 'none'}",
            )
        )
    return rows


def plots(results: dict, out_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []
    if "ort" in results:
        fig, ax = plt.subplots(figsize=(7, 4.2))
        for model, lines in results["ort"]["models"].items():
            for line, pts in lines.items():
                bs = [int(b) for b in pts]
                ax.plot(bs, list(pts.values()), marker="o", label=f"{model} {line}")
        for r in results.get("service", []):
            if r["case"] == "n16" and r["concurrency"] == 16:
                ax.axhline(r["images_per_s"], color="k", ls="--", lw=1, label="service n=16 c=16")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size")
        ax.set_ylabel("images/s")
        ax.set_title(f"In-process ONNX Runtime ({results['ort']['provider']})")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out_dir / "ort_ceiling.png", dpi=110)
        plt.close(fig)
        names.append("ort_ceiling.png")
    if "service" in results:
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
        for color, label, rows in (
            ("C0", "service", results["service"]),
            ("C1", "naive, 1 ORT thread", results.get("naive_strong", [])),
            ("C2", "naive, ORT default threads", results.get("naive", [])),
        ):
            pts = sorted((r["concurrency"], r) for r in rows if r["case"] == "n1" and _measured(r))
            if not pts:
                continue
            cs = [c for c, _ in pts]
            a1.plot(cs, [r["requests_per_s"] for _, r in pts], marker="o", color=color, label=label)
            a2.plot(cs, [r["p99_ms"] for _, r in pts], marker="o", color=color, label=f"{label} p99")
            a2.plot(cs, [r["p50_ms"] for _, r in pts], marker="x", ls=":", color=color, label=f"{label} p50")
        for a in (a1, a2):
            a.set_xscale("log", base=2)
            a.set_xlabel("concurrency (closed loop, n=1)")
            a.grid(alpha=0.3)
            a.legend(fontsize=8)
        a1.set_ylabel("requests/s")
        a2.set_ylabel("latency (ms)")
        a2.set_yscale("log")
        fig.tight_layout()
        fig.savefig(out_dir / "closed_loop.png", dpi=110)
        plt.close(fig)
        names.append("closed_loop.png")
    if "open" in results:
        fig, ax = plt.subplots(figsize=(7, 4))
        for case, o in results["open"].items():
            rows = o["rates"]
            xs, ys = [r["offered_per_s"] for r in rows], [r["p99_ms"] or 0 for r in rows]
            ax.plot(xs, ys, marker="o", label=f"{case} p99")
            ax.axvline(o["knee_per_s"], ls=":", lw=1)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("offered requests/s (open loop)")
        ax.set_ylabel("p99 latency (ms)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out_dir / "open_loop.png", dpi=110)
        plt.close(fig)
        names.append("open_loop.png")
    if "configs" in results:
        labels, n64, n16 = [], [], []
        base = results.get("service", [])
        rows = [("default", base)] + [(k, v["points"]) for k, v in results["configs"].items()]
        for name, pts in rows:
            a, b = _find(pts, "n1", 64), _find(pts, "n16", 16)
            if a and b:
                labels.append(name)
                n64.append(a["requests_per_s"])
                n16.append(b["images_per_s"])
        if labels:
            fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 0.45 * len(labels) + 1.5))
            a1.barh(labels, n64)
            a1.set_xlabel("n=1, c=64: requests/s")
            a2.barh(labels, n16)
            a2.set_xlabel("n=16, c=16: images/s")
            a2.set_yticklabels([])
            for a in (a1, a2):
                a.invert_yaxis()
                a.grid(alpha=0.3, axis="x")
            fig.tight_layout()
            fig.savefig(out_dir / "configs.png", dpi=110)
            plt.close(fig)
            names.append("configs.png")
    return names


def _cpu_per_req(r: dict) -> float | None:
    if r.get("server_cpu_cores") is None or not r["requests_per_s"]:
        return None
    return 1000 * r["server_cpu_cores"] / r["requests_per_s"]


def _closed_table(rows: list[dict]) -> list[str]:
    out = [
        "| request | concurrency | requests/s | images/s | p50 ms | p95 ms | p99 ms | mean batch | "
        "server CPU | server CPU ms/req | loadgen CPU | other CPU | errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        if "skipped" in r:
            out.append(f"| {r['case']} | {r['concurrency']} | skipped: {r['skipped']} |" + " |" * 11)
            continue
        out.append(
            f"| {r['case']} | {r['concurrency']} | {r['requests_per_s']:.0f} | {r['images_per_s']:.0f} | "
            f"{_f(r['p50_ms'], '{:.2f}')} | {_f(r['p95_ms'], '{:.1f}')} | {_f(r['p99_ms'], '{:.1f}')} | "
            f"{_f(r['mean_batch_size'], '{:.1f}')} | {_f(r['server_cpu_cores'], '{:.2f}')} | "
            f"{_f(_cpu_per_req(r), '{:.2f}')} | "
            f"{r['loadgen_cpu_cores']:.2f} | {_f(r['other_cpu_cores'], '{:.2f}')} | "
            f"{_statuses(r['statuses'])} |"
        )
    return out


def _met(ok: bool | None) -> str:
    return "-" if ok is None else ("yes" if ok else "NO")


def _us(per_cpu_s: float | None) -> str:
    """Images (or calls) per CPU-second -> CPU microseconds each."""
    return _f(1e6 / per_cpu_s if per_cpu_s else None)


def _inproc_section(ref: dict) -> list[str]:
    b = str(max(ref["batches"]))
    L = [
        f"### In-process references ({ref['model']}, batch {b})",
        "",
        "`ort`: ONNX Runtime alone. `png`: the whole work of a JSON reply: z and labels from one seed "
        "per image (`service.latent`), one-hot y, ONNX Runtime, PNG + base64 (`service.imaging`). "
        "`1x<cores>`: one caller, intra_op = cores; `2x1`: two callers on one session at intra_op 1.",
        "",
        "| line | images/s | images per CPU-s | CPU us per image |",
        "| --- | ---: | ---: | ---: |",
    ]
    for line, pts in ref["images_per_s"].items():
        eff = ref["per_cpu_s"][line][b]
        L.append(f"| {line} | {pts[b]:.0f} | {eff:.0f} | {_us(eff)} |")
    return [*L, ""]


def host_costs(rows: list[dict], suffix: str) -> tuple[float, float] | None:
    """The service's CPU per request (ms) and per image (us) for reply `suffix` ('' PNG, 'raw'):
    the line through its CPU per request at n=1 (c=64) and at n=64 (c=16)."""
    a, b = _find(rows, "n1" + suffix, 64), _find(rows, "n64" + suffix, 16)
    if not (_measured(a) and _measured(b)) or _cpu_per_req(a) is None or _cpu_per_req(b) is None:
        return None
    na, nb = a["images_per_request"], b["images_per_request"]
    per_image = (_cpu_per_req(b) - _cpu_per_req(a)) / (nb - na)
    return _cpu_per_req(a) - na * per_image, 1000 * per_image


def _host_section(host: dict) -> list[str]:
    ref = host["inproc"]
    L = [
        f"### Host ceiling: the near-free model ({host['model']})",
        "",
        f"`bench/nearfree.py`: {host['like']}'s inputs and outputs, ~no arithmetic (ONNX Runtime ~1 us per "
        "image), so these rows are the service's own host work, the ceiling a GPU would hit. "
        "The service with default settings; 'host cost' is the line through its CPU per request at n=1 "
        "(c=64) and n=64 (c=16): a fixed cost per request plus one per image. In process: the same host "
        "work (z and labels per seed, the near-free ORT call, PNG + base64 or `.npy`) in a loop, the "
        "faster layout.",
        "",
        "| reply | n=1 c=64 req/s | n=1 CPU ms/req | n=64 c=16 images/s | n=64 CPU ms/req | "
        "host cost per request ms | host cost per image us | in-process images/s (batch 64) | "
        "in-process CPU us/image (batch 64) | in-process CPU us/call (batch 1) | service n=64 / in-process |",
        "| --- |" + " ---: |" * 10,
    ]
    for label, suffix, kind in (("PNG (JSON)", "", "png"), ("raw (.npy)", "raw", "raw")):
        a, b = _find(host["service"], "n1" + suffix, 64), _find(host["service"], "n64" + suffix, 16)
        best = best_ref(ref, kind)
        if (a and "skipped" in a) or (b and "skipped" in b):
            why = (a if a and "skipped" in a else b)["skipped"]
            L.append(f"| {label} | skipped: {why} |" + " |" * 9)
            continue
        cost = host_costs(host["service"], suffix)
        eff1 = ref["per_cpu_s"].get(best[1], {}).get("1") if best else None
        ratio = b["images_per_s"] / best[0] if _measured(b) and best else None
        L.append(
            f"| {label} | {_f(a and a['requests_per_s'])} | {_f(a and _cpu_per_req(a), '{:.2f}')} | "
            f"{_f(b and b['images_per_s'])} | {_f(b and _cpu_per_req(b), '{:.2f}')} | "
            f"{_f(cost and cost[0], '{:.2f}')} | {_f(cost and cost[1], '{:.1f}')} | "
            f"{_f(best and best[0])} | {_us(best and best[2])} | {_us(eff1)} | {_f(ratio, '{:.2f}x')} |"
        )
    L += ["", "Every point:", ""] + _closed_table(host["service"]) + [""]
    return L


def markdown(results: dict, plot_names: list[str], command: str, rel: str = "bench") -> str:
    """`rel`: the plots' folder relative to the doc (bench, or bench/gpu for the CUDA doc)."""
    m = results["machine"]
    p = results["plan"]
    L = [
        BEGIN,
        "",
        f"Generated by `{results.get('command', command)}` on {m['before']['time']} "
        f"({m['cores']} cores, Python {m['python']}, "
        f"onnxruntime {m.get('onnxruntime', '?')}, provider `{results['provider']}`); the whole run took "
        f"{results['elapsed_s'] / 60:.1f} min. Each point: {p['repeats']} run(s) of {p['duration']:g} s "
        f"after {p['warmup']:g} s warm-up, medians; load generator: {results.get('loadgen_procs', 1)} "
        f"process(es). Raw data: `docs/{rel}/results.json`.",
        "",
        f"Background load: load average {', '.join(f'{x:.2f}' for x in m['before']['loadavg'])} before, "
        f"{', '.join(f'{x:.2f}' for x in m['after']['loadavg'])} after. 'other CPU' in the tables is the CPU "
        "(in cores) that neither the server nor the load generator used during the window: "
        "other users' jobs.",
        "",
    ]
    for pr in results.get("partial_runs", []):
        pm = pr["machine"]["before"]
        L += [
            f"Re-run later, replacing these parts: `python -m bench {' '.join(pr['parts'])}` on {pm['time']} "
            f"(load average {', '.join(f'{x:.2f}' for x in pm['loadavg'])}).",
            "",
        ]
    t = targets(results)
    if t:
        L += [
            "### Goals",
            "",
            "Issue 15's goals (ratios from this one run) and the overload checks. The strong naive "
            "server: `bench/naive.py` with a sync handler and one ORT thread. In-process references: "
            "the faster of one caller with all cores' ORT threads and two callers with one thread each.",
            "",
            "| goal | met | figures |",
            "| --- | --- | --- |",
        ]
        for name, ok, txt in t:
            L.append(f"| {name} | {_met(ok)} | {txt} |")
        L.append("")
    if "inproc" in results:
        L += _inproc_section(results["inproc"])
    if "ort" in results:
        o = results["ort"]
        L += [
            "### Ceiling: in-process ONNX Runtime (images/s)",
            "",
            "`ort_1x2`: one caller, intra_op 2. `ort_2x1`: two caller threads on one session, intra_op 1 "
            "(the service's default). `full_2x1`: `ort_2x1` plus the per-image work of the service "
            "(z from one seed per image, PNG + base64).",
            "",
        ]
        for model, lines in o["models"].items():
            bs = list(next(iter(lines.values())).keys())
            L += [f"**{model}**", "", "| line | " + " | ".join(bs) + " |", "| --- |" + " ---: |" * len(bs)]
            for line, pts in lines.items():
                L.append(f"| {line} | " + " | ".join(f"{pts[b]:.0f}" for b in bs) + " |")
            for line, pts in o.get("per_cpu_s", {}).get(model, {}).items():
                L.append(f"| {line} per CPU-s | " + " | ".join(f"{pts[b]:.0f}" for b in bs) + " |")
            L.append("")
    if "service" in results:
        L += ["### Service, default settings, closed loop", ""] + _closed_table(results["service"]) + [""]
    if "naive_strong" in results:
        L += [
            "### Naive baseline (`bench/naive.py`): sync handler, one ORT thread, closed loop",
            "",
            "The baseline of the goals: FastAPI, a plain `def` handler (Starlette's thread pool), one "
            "InferenceSession at intra_op 1 and inter_op 1, one process, one ORT call per request, "
            "Pillow PNG + base64 in a JSON reply.",
            "",
        ]
        L += _closed_table(results["naive_strong"]) + [""]
    if "naive" in results:
        L += [
            "### Naive baseline with ONNX Runtime's default threads (issue 6's), closed loop",
            "",
        ]
        L += _closed_table(results["naive"]) + [""]
    if "host" in results:
        L += _host_section(results["host"])
    if "configs" in results:
        L += ["### Configurations (closed loop)", ""]
        L += [
            "| configuration | n=1 c=1 p50 ms | n=1 c=64 req/s | n=1 c=64 p99 ms | n=1 c=64 batch | "
            "n=16 c=16 images/s | n=16 c=16 p99 ms | n=16 c=16 batch |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        rows = [("default", results.get("service", []))]
        rows += [(k, v["points"]) for k, v in results["configs"].items()]
        for name, pts in rows:
            a, b, c = _find(pts, "n1", 1), _find(pts, "n1", 64), _find(pts, "n16", 16)
            if not (a and b and c):
                continue
            L.append(
                f"| {name} | {a['p50_ms']:.2f} | {b['requests_per_s']:.0f} | {b['p99_ms']:.1f} | "
                f"{_f(b['mean_batch_size'], '{:.1f}')} | {c['images_per_s']:.0f} | {c['p99_ms']:.1f} | "
                f"{_f(c['mean_batch_size'], '{:.1f}')} |"
            )
        L.append("")
    if "open" in results:
        L += ["### Open loop and overload", ""]
        L += [
            "| request | offered/s | ok/s | p50 ms | p99 ms | mean batch | connections | server CPU | "
            "loadgen CPU | non-200 |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        ]
        for case, o in results["open"].items():
            for r in [*o["rates"], *([o["overload"]] if "overload" in o else [])]:
                tag = " (overload)" if r is o.get("overload") else ""
                L.append(
                    f"| {case}{tag} | {r['offered_per_s']:.0f} | {r['requests_per_s']:.0f} | "
                    f"{_f(r['p50_ms'], '{:.1f}')} | {_f(r['p99_ms'], '{:.1f}')} | "
                    f"{_f(r['mean_batch_size'], '{:.1f}')} | {r['max_connections']} | "
                    f"{_f(r['server_cpu_cores'], '{:.2f}')} | {r['loadgen_cpu_cores']:.2f} | "
                    f"{_statuses(r['statuses'])} |"
                )
        L.append("")
        for case, o in results["open"].items():
            L.append(
                f"- {case}: closed-loop capacity {o['capacity_per_s']:.0f} req/s, "
                f"knee {o['knee_per_s']:.0f} req/s "
                "(highest offered rate served in full with p99 < 1 s)."
            )
        L.append("")
    for n in plot_names:
        L.append(f"![{n}]({rel}/{n})")
    L += ["", END]
    return "\n".join(L)


TEMPLATE = """# Benchmarks

How fast the service is on this machine, held against the in-process ONNX Runtime ceiling and a naive
baseline. Reproduce with `make bench` (= `.venv/bin/python -m bench all`, about 15 minutes) or
`.venv/bin/python -m bench all --quick` (about 3 minutes).

{generated}
"""


def write(results: dict, out_dir: Path, doc: Path, command: str) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(results, indent=1))
    names = plots(results, out_dir)
    rel = os.path.relpath(out_dir.resolve(), doc.resolve().parent)
    gen = markdown(results, names, command, rel)
    if doc.exists() and BEGIN in doc.read_text() and END in doc.read_text():
        text = doc.read_text()
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        doc.write_text(head + gen + tail)
    else:
        doc.write_text(TEMPLATE.format(generated=gen))
