"""Results JSON -> PNG plots (docs/bench/) and the generated part of docs/BENCHMARKS.md.

The generated tables sit between `<!-- bench:begin -->` and `<!-- bench:end -->`; the
hand-written text around them (findings, profiles, the choice of defaults) is kept.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
DEFAULT_MODEL = "mnist-cdcgan"


def _f(v, fmt="{:.0f}") -> str:
    return "-" if v is None else fmt.format(v)


def _statuses(s: dict) -> str:
    bad = {k: v for k, v in s.items() if k != "200"}
    return ", ".join(f"{k}: {v}" for k, v in sorted(bad.items())) or "none"


def _find(rows: list[dict], case: str, c: int) -> dict | None:
    return next((r for r in rows if r["case"] == case and r["concurrency"] == c), None)


def ceiling(results: dict, model: str = DEFAULT_MODEL) -> dict:
    """Best images/s over batch sizes for each ORT line of `model`."""
    out = {}
    for line, pts in results.get("ort", {}).get("models", {}).get(model, {}).items():
        b, v = max(pts.items(), key=lambda kv: kv[1])
        out[line] = (v, int(b))
    return out


def targets(results: dict) -> list[tuple[str, bool | None, str]]:
    rows: list[tuple[str, bool | None, str]] = []
    svc = results.get("service", [])
    ceil = ceiling(results)
    r16 = _find(svc, "n16", 16)
    service_line = next((k for k in ceil if k.startswith("ort_") and k.endswith("x1")), None)
    if r16 and service_line and r16["images_per_s"]:
        v, b = ceil[service_line]
        best_v, best_b = max((x for k, x in ceil.items() if k.startswith("ort_")), key=lambda x: x[0])
        ratio = r16["images_per_s"] / v
        eff = results["ort"].get("per_cpu_s", {}).get(DEFAULT_MODEL, {}).get(service_line)
        eff_txt = ""
        if eff and r16.get("server_cpu_cores"):
            svc_eff = r16["images_per_s"] / r16["server_cpu_cores"]
            ort_eff = eff[str(b)]
            eff_txt = (
                f"; per CPU-second (robust to other users' load): {svc_eff:.0f} vs {ort_eff:.0f} "
                f"images = {svc_eff / ort_eff:.0%}"
            )
        rows.append(
            (
                "n=16, concurrency 16: >= 85% of in-process ORT images/s at its best batch",
                ratio >= 0.85,
                f"{r16['images_per_s']:.0f} images/s = {ratio:.0%} of {v:.0f} ({service_line}, batch {b}; "
                f"{r16['images_per_s'] / best_v:.0%} of the best ORT line, {best_v:.0f} at batch {best_b})"
                + eff_txt,
            )
        )
    s64, n64 = _find(svc, "n1", 64), _find(results.get("naive", []), "n1", 64)
    if s64 and n64 and n64["requests_per_s"] and s64["p99_ms"] and n64["p99_ms"]:
        x = s64["requests_per_s"] / n64["requests_per_s"]
        ok = x >= 2 and (s64["p99_ms"] or 1e9) < (n64["p99_ms"] or 0)
        rows.append(
            (
                "n=1, concurrency 64: >= 2x the naive requests/s, lower p99",
                ok,
                f"{s64['requests_per_s']:.0f} vs {n64['requests_per_s']:.0f} req/s = {x:.2f}x; "
                f"p99 {s64['p99_ms']:.1f} vs {n64['p99_ms']:.1f} ms",
            )
        )
    s1 = _find(svc, "n1", 1)
    if s1 and s1["p50_ms"] is not None:
        rows.append(("n=1, concurrency 1: p50 <= 3 ms", s1["p50_ms"] <= 3.0, f"p50 {s1['p50_ms']:.2f} ms"))
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
            ("C1", "naive", results.get("naive", [])),
        ):
            pts = sorted((r["concurrency"], r) for r in rows if r["case"] == "n1")
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
        out.append(
            f"| {r['case']} | {r['concurrency']} | {r['requests_per_s']:.0f} | {r['images_per_s']:.0f} | "
            f"{_f(r['p50_ms'], '{:.2f}')} | {_f(r['p95_ms'], '{:.1f}')} | {_f(r['p99_ms'], '{:.1f}')} | "
            f"{_f(r['mean_batch_size'], '{:.1f}')} | {_f(r['server_cpu_cores'], '{:.2f}')} | "
            f"{_f(_cpu_per_req(r), '{:.2f}')} | "
            f"{r['loadgen_cpu_cores']:.2f} | {_f(r['other_cpu_cores'], '{:.2f}')} | "
            f"{_statuses(r['statuses'])} |"
        )
    return out


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
        f"after {p['warmup']:g} s warm-up, medians. Raw data: `docs/{rel}/results.json`.",
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
        L += ["### Targets", "", "| target | met | figures |", "| --- | --- | --- |"]
        for name, ok, txt in t:
            L.append(f"| {name} | {'yes' if ok else 'NO'} | {txt} |")
        L.append("")
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
    if "naive" in results:
        L += ["### Naive baseline (`bench/naive.py`), closed loop", ""]
        L += _closed_table(results["naive"]) + [""]
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
