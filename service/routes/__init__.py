"""The HTTP routes, one module per area; each declares its own OpenAPI body and error replies.

- `generate`: POST /generate, /interpolate, /arithmetic (images from seeds and latents)
- `score`: POST /score (realness, labels, IS and FID of uploaded images)
- `models`: GET /models, /models/{name}, /healthz, /readyz, /metrics
- `v2`: the Open Inference Protocol (KServe v2 REST): /v2/..., infer over the generators' batchers
- `admin`: POST /admin/reload (new model versions in, removed ones out; as SIGHUP)

Handlers stay thin: request plumbing in `service.plumbing`, reply formats in `service.formats`,
the work in modules without HTTP (latent, batcher, imaging, scoring).
"""
