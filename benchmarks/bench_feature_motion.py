"""How much motion RGB snippet features hold: ridge R^2 from them (+-1 snippet of context) to the
flow features of the same snippets, fitted on the training (validation-subset) videos, scored on
those and on the test videos, at several regularisations.

    python benchmarks/bench_feature_motion.py WORKDIR rgb rgb-probdistill rgb-plain120

WORKDIR: a bench_detection_synthetic.py run (features/<name>/, features/flow/).
"""
import sys
from pathlib import Path

import numpy as np

root = Path(sys.argv[1])
def load(folder, prefix):
    out = {}
    for f in sorted(Path(folder).glob(f"video_{prefix}_*.npy")):
        out[f.stem] = np.load(f)
    return out
def ctx(x):
    p = np.pad(x, ((1, 1), (0, 0)), mode="edge")
    return np.concatenate([p[:-2], p[1:-1], p[2:]], 1)
for name in sys.argv[2:]:
    rows = []
    for lam in (1.0, 10.0, 100.0, 1000.0):
        data = {}
        for subset in ("validation", "test"):
            r, f = load(root / "features" / name, subset), load(root / "features/flow", subset)
            X = np.concatenate([ctx(r[k][: min(len(r[k]), len(f[k]))]) for k in r])
            Y = np.concatenate([f[k][: min(len(r[k]), len(f[k]))] for k in r])
            data[subset] = (X, Y)
        X, Y = data["validation"]
        mx, my = X.mean(0), Y.mean(0)
        W = np.linalg.solve((X - mx).T @ (X - mx) + lam * np.eye(X.shape[1]), (X - mx).T @ (Y - my))
        r2 = {}
        for subset, (Xs, Ys) in data.items():
            pred = (Xs - mx) @ W + my
            r2[subset] = 1 - ((pred - Ys) ** 2).sum() / ((Ys - Ys.mean(0)) ** 2).sum()
        rows.append(f"lam {lam:g}: train {r2['validation']:.2f} test {r2['test']:.2f}")
    print(name, "; ".join(rows))
