"""Write notebooks/01..05 from the cell lists below (stored without outputs).

This file is the notebooks' source: edit the cells here and rerun
``python tools/make_notebooks.py``, never the .ipynb files by hand
(``tests/test_notebook_source.py`` fails when they differ from what this writes).
The notebooks are thin: each cell calls mdw_kit or the widgets. ``MDW_SMOKE=1``
shrinks every size (CI runs them that way with ``pytest notebooks --nbval-lax``);
``python tools/render_notebooks.py`` executes them in full mode into
``docs/notebooks/*.html``. A cell tagged ``readme-figure`` gives the notebook's picture
in ``docs/images/``.
"""
from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parents[1]

SETUP = '''\
# Setup: use the checkout when the package is not installed; MDW_SMOKE=1 shrinks every size.
import importlib.util, os, pathlib, sys, time
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")   # no weight-loading bars from the text encoder
os.environ.setdefault("MDW_NO_PROGRESS", "1")                # the widgets show progress; no stacked bars
if importlib.util.find_spec("mdw_kit") is None:
    sys.path.insert(0, str(pathlib.Path.cwd().resolve().parent))
import numpy as np
import pandas as pd
import torch
from mdw_kit.utils import smoke_mode
from widgets._static import smoke_banner
SMOKE = smoke_mode()
T0 = time.perf_counter()
_ = smoke_banner(SMOKE)'''

FOOTER = '''\
print(f"notebook ran in {time.perf_counter() - T0:.0f} s, {time.process_time():.0f} s of CPU "
      f"({'smoke' if SMOKE else 'full'} mode, {torch.get_num_threads()} threads)")'''


def md(text: str):
    return new_markdown_cell(text.strip("\n"))


def code(text: str, tags: list[str] | None = None):
    cell = new_code_cell(text.strip("\n"))
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


# ---------------------------------------------------------------------------------------------
NB01 = [
    md('''
# 01 · Data and injected noise

mdw-kit works on image-caption pairs, the data a CLIP-style model trains on with a
contrastive (InfoNCE) loss. Web-crawled pairs are noisy: a share of the captions does
not describe its image. To measure how a method copes with that, we take clean data
and **inject** noise ourselves: a share *r* of the training captions is permuted among
the training pairs so that no chosen pair keeps its own caption. Validation and test
pairs stay clean, and the permutation is kept, so we always know which pairs are wrong.

Two offline sources are used throughout:

* `openmoji`: real drawings (the OpenMoji emoji, CC BY-SA 4.0) with their English names;
* `shapes`: procedural scenes of 2-4 coloured objects with a caption and a box per object.
'''),
    code(SETUP),
    code('''
from mdw_kit.data import inject_noise, load_source
from mdw_kit import viz
from widgets import PairGallery
from widgets._static import show_static

NOISE_RATE = 0.4
moji = load_source("openmoji", image_size=32, limit=150 if SMOKE else None)
shapes = load_source("shapes", num_images=60 if SMOKE else 600, image_size=32, seed=0)
pd.DataFrame([moji.summary(), shapes.summary()])
'''),
    md('''
## Injecting noise

`inject_noise` returns a new dataset; `clean` marks the pairs that kept their caption and
`source_caption` says whose caption a noisy pair now carries.
'''),
    code('''
noisy = inject_noise(moji, rate=NOISE_RATE, seed=0)
split = pd.Series(noisy.pair_split)
pd.DataFrame({"pairs": split.value_counts(),
              "injected noise": pd.Series(~noisy.clean.numpy()).groupby(split.values).sum()})
'''),
    code('''
# A few noisy training pairs: the caption they now carry next to their own.
bad = np.flatnonzero(~noisy.clean.numpy())[:8]
pd.DataFrame({"image": [noisy.image_ids[noisy.pair_image[p]] for p in bad],
              "caption now": [noisy.captions[p] for p in bad],
              "its own caption": [moji.captions[p] for p in bad]})
'''),
    md('''
## Browsing the pairs

The gallery filters by split and by the injected-noise flag (red frames); later notebooks
add the predicted clean probability as a third filter. Where no widget can be drawn (an
exported page), the same output shows a picture of the first page instead.
'''),
    code('''
gallery = PairGallery.from_dataset(noisy, page_size=12)
gallery.split_filter.value = "train"
gallery.show();
''', tags=["readme-figure"]),
    md('''
## `shapes`: captions that name objects, with boxes

Each caption names every object from left to right; the boxes let notebook 04 check
whether the regions distillation emphasises are the objects the text talks about.
'''),
    code('''
show_static(viz.plot_pairs(shapes.images[:8], shapes.captions[:8], ncols=4))
shapes.boxes[0]
'''),
    md('''
## Your own data

Two local formats load the same way as the built-in sources (nothing is fetched):

* `hf`: a folder of images with a `metadata.jsonl` (one `{"file_name": ..., "text": ...}` per
  line; the Hugging Face `imagefolder` layout), or parquet, or a `save_to_disk` folder. Without
  `train` / `validation` / `test` splits of its own, val and test are drawn from it.
* `karpathy`: an image folder and a Karpathy split JSON (Flickr30k / MS-COCO style:
  `{"images": [{"filename", "split", "sentences": [{"raw": ...}]}]}`, several captions per image).

The cell below writes both from the `shapes` scenes into a temporary folder, then loads them.
Point `path` / `image_root` and `split_json` at your own files instead; from the command line,
`mdw data --source hf --option path=/your/folder` does the same.
'''),
    code('''
import json, tempfile
from PIL import Image

own = pathlib.Path(tempfile.mkdtemp(prefix="mdw-own-data-"))
(own / "images").mkdir()
rows, entries = [], []
for i in range(40):
    name = f"scene_{i:03d}.png"
    Image.fromarray(shapes.images[i].permute(1, 2, 0).numpy()).save(own / "images" / name)
    caps = [c for c, r in zip(shapes.captions, shapes.pair_image.tolist()) if r == i]
    rows.append({"file_name": name, "text": caps[0]})
    entries.append({"filename": name, "split": "train" if i < 30 else ("val" if i < 35 else "test"),
                    "sentences": [{"raw": c} for c in caps]})
(own / "images" / "metadata.jsonl").write_text("".join(json.dumps(r) + "\\n" for r in rows))
(own / "split.json").write_text(json.dumps({"images": entries}))

folder = load_source("hf", path=own / "images", image_size=32)
karpathy = load_source("karpathy", image_root=own / "images", split_json=own / "split.json", image_size=32)
print(open(own / "images" / "metadata.jsonl").readline().strip())
pd.DataFrame([folder.summary(), karpathy.summary()], index=["hf imagefolder", "karpathy json"]).T.head(8)
'''),
    code('''
# The loaded pairs: any of these datasets goes wherever `moji` went above (inject_noise, the gallery,
# and mdw_kit.data.bundle.prepare_data("hf", source_options={"path": ...}) in the next notebooks).
show_static(viz.plot_pairs(folder.images[folder.pair_image[:4]], folder.captions[:4], ncols=4));
'''),
    code(FOOTER),
]

# ---------------------------------------------------------------------------------------------
NB02 = [
    md('''
# 02 · Dual-track learning and noise detection

Trained on noisy pairs, a contrastive model first fits the pairs that agree with each
other and only later memorises the mismatched ones, so early in training a mismatched
pair tends to have a **high per-pair loss**. Stage 1 of MDW uses that:

1. two tracks A and B (different seeds and data orders) train on all pairs for a few
   warm-up epochs;
2. after each epoch each track fits a two-component Gaussian mixture to its per-pair
   losses; the posterior of the low-loss component is the pair's **clean probability**;
3. each track then trains on the pairs its **peer** calls clean (cross-supervision), so
   neither confirms its own mistakes.

The parameters of every epoch are saved: these *expert trajectories* are what
distillation (notebook 03) imitates, so experts that did not memorise the noise matter.
'''),
    code(SETUP),
    code('''
import tempfile
import mdw_kit as mk
from mdw_kit.experts.dual_track import DualTrackConfig, summarize_detection
from widgets import NoiseExplorer, TrainingMonitor

# The default regime: openmoji at 64 px with 50% caption noise, EfficientNet-Lite0 (ImageNet weights,
# frozen; its features of every image are computed once and cached) with MiniLM captions, linear heads.
data = mk.prepare_data(preset="smoke" if SMOKE else "default")
model_cfg = data.model_config
inputs = data.train.pair_inputs()                            # what the models take: cached features
images = data.train.images[data.train.pair_image]            # pixels, one per training pair, for display
cfg = DualTrackConfig(epochs=4 if SMOKE else 10, warmup_epochs=1 if SMOKE else 2, batch_size=128)
print(f"{model_cfg.tower} at {data.image_size} px, train_layers={model_cfg.train_layers!r}")
data.info
'''),
    md('''
## Training the two tracks

The monitor is fed by the training loop's callbacks: per-track loss, validation R-sum
(sum of the six recall@K figures, out of 600) and, once the warm-up ends, the AUROC of
each track's noise score against the injected ground truth. The noise score is the rank of
the track's per-pair loss, averaged over the epochs since warm-up. It is a finer ranking than
the mixture's clean probability, which is exactly 0 or 1 for many pairs.
'''),
    code('''
monitor = TrainingMonitor.for_dual_track()
monitor.show(static=False)
report, res = mk.noise_report(data, cfg, with_result=True,
                              callback=monitor.callback, epoch_callback=monitor.callback)
monitor.snapshot();   # the final curves become the picture a saved or exported copy keeps
'''),
    code('''
det = summarize_detection(res)
pd.DataFrame({stage: {k: det[stage]["consensus"][k] for k in ("auroc", "precision", "recall", "f1")}
              for stage in ("warmup", "final")}).round(3)
'''),
    code('''
pd.Series(report.summary()).to_frame("noise report")
'''),
    md('''
## Exploring the detection

Histograms of each track's clean probability (and of the consensus, their mean), split
by the ground truth. The per-pair loss view shows the final models' losses with the
two-component mixture fitted to them (the tracks' own fits use a running average of the
loss over epochs, so they differ slightly). Move the threshold (on the clean-probability
view): pairs below it are flagged noisy, and precision / recall / the confusion matrix
follow. Click a bar to list its pairs in the gallery below.
'''),
    code('''
from mdw_kit.experts.gmm import fit_clean_probability
from mdw_kit.train import per_pair_losses

losses, mixtures = {}, {}
for track, state in res.states.items():
    model = model_cfg.build()
    model.load_state_dict(state)
    losses[track] = per_pair_losses(model, inputs, data.train_text)
    mixtures[track] = fit_clean_probability(losses[track])[1]
explorer = NoiseExplorer.from_report(report, dataset=data.train, losses=losses, mixtures=mixtures)
explorer.show();
''', tags=["readme-figure"]),
    md('''
## The pairs most likely mismatched

The ranked report lists every training pair by its noise score, most suspect first, with the
caption it carries and the training caption that both tracks' final models match best to its
image: for a mismatched pair, usually the caption it lost. Search a word, keep only the
flagged pairs or (with injected noise) the truly mismatched ones, page through, and export the
filtered rows as `mismatch_report.csv`. `mdw noise-report` writes the same table into its run
folder.
'''),
    code('''
from mdw_kit.experts.mismatch import track_embeddings
from widgets import MismatchReport

image_emb, text_emb = track_embeddings(res.states, model_cfg.build, inputs, data.train_text)
mismatches = MismatchReport.from_report(report, images=images, image_emb=image_emb, text_emb=text_emb,
                                        page_size=8, csv_dir=tempfile.mkdtemp(prefix="mdw-nb02-"))
mismatches.show();
'''),
    code('''
top = mismatches.table.head(50)
rows = np.flatnonzero(data.full.pair_split == "train")         # the training pairs' rows in the full set
lost = data.full.source_caption[rows].numpy()                    # whose caption each training pair carries
restored = sum(int(lost[j]) == int(rows[p]) for p, j in zip(top["pair"], top["best_other_pair"]))
print(f"of the 50 highest-scored pairs, {int((~top['true_clean']).sum())} are truly mismatched; for {restored} "
      "of them the suggested caption is exactly the one the pair lost to the noise")
top[["rank", "caption", "best_other_caption", "noise_score", "true_clean"]].head(8)
'''),
    md('''
## Why two tracks: naive experts for comparison

The same loop with `naive=True` trains both tracks on every pair (plain training, as the
MTT-VL and LoRS baselines record their experts). Its pairs are scored the same way, so the
table compares how well each run's losses still separate noisy from clean pairs at the end.
A naive model separates them well until it starts memorising the wrong captions; how soon that
happens depends on the data size, the epochs and the rate, so on a small subset and a short run
the two can come out close (the sentence under the table says which way this run went). On all
of openmoji at 50% noise over 12 epochs the benchmark (`benchmarks/results/dual_track.json`,
3 seeds) measured AUROC 0.938 vs 0.906, and experts whose test R-sum was 92 vs 61: dual-track's
main gain is the experts, not the flags.
'''),
    code('''
_, naive = mk.noise_report(data, DualTrackConfig(**{**cfg.to_dict(), "progress": False}), naive=True,
                           validate=False, with_result=True)
rows = {"dual-track": summarize_detection(res)["final"]["consensus"],
        "naive": summarize_detection(naive)["final"]["consensus"]}
gap = rows["dual-track"]["auroc"] - rows["naive"]["auroc"]
print(f"this run: dual-track detection AUROC {rows['dual-track']['auroc']:.3f}, naive {rows['naive']['auroc']:.3f} "
      f"({'dual-track ahead' if gap > 0.01 else 'naive ahead' if gap < -0.01 else 'level'} by {abs(gap):.3f})")
pd.DataFrame(rows).loc[["auroc", "precision", "recall", "true_residual_noise"]].round(3)
'''),
    md('''
## Selecting or weighting: sharper flags against stronger experts

How a track uses its peer's clean probabilities decides both what it can still detect and how
good an expert it becomes. `mode="select"` (the default above) trains only on the pairs the
peer calls clean; `mode="weight"` weights every pair by its clean probability, floored at
`min_weight`. The floor lets clean emoji that have no close relatives be learned instead of
being left out for good, so they stop looking noisy; the same floor lets a little noise in.
The benchmark (all of openmoji at 50% noise, 30 epochs, six seeds;
`benchmarks/results/dual_track_epochs30_*_6seeds.json`) measured:

| setting | detection AUROC | expert test R-sum | naive experts |
|---|---|---|---|
| `keep_fraction=0.45` (select the 45% with the lowest noise score) | 0.939 | 104.5 | 62.9 |
| `mode="weight", min_weight=0.05` | 0.956 | 96.9 | 62.6 |
| `mode="weight", min_weight=0.01` | 0.952 | 103.1 | 62.6 |

To try one here, rerun the training cell with, for example,
`cfg = DualTrackConfig(**{**cfg.to_dict(), "mode": "weight", "min_weight": 0.01})`.
The figures above come from that full benchmark, not from this subset and short run.
'''),
    code(FOOTER),
]

# ---------------------------------------------------------------------------------------------
NB03 = [
    md('''
# 03 · Distillation

**Dataset distillation** replaces a training set by a few synthetic examples chosen so
that a model trained on them ends up where a model trained on the real data does. MDW
learns, for a budget of *M* pairs:

* *M* synthetic images (pixels) and *M* synthetic texts (vectors in the frozen text
  encoder's space, read back as their nearest real captions);
* an *M x M* soft **correspondence** matrix P~ that replaces the identity target of
  InfoNCE, so a synthetic image may match several texts;
* the student learning rates.

They are learned by **trajectory matching**: start a student at an expert's epoch *t*,
take a few SGD steps on the synthetic pairs, and make the result land close to the
expert's epoch *t + D*. The experts come from stage 1 (notebook 02), so they did not
learn the noise.
'''),
    code(SETUP),
    code('''
import tempfile
import mdw_kit as mk
from mdw_kit.evaluation.protocol import EvalConfig, evaluate_distilled
from mdw_kit.distill.methods import train_pairs
from mdw_kit import viz
from widgets import PairGallery, TrainingMonitor
from widgets._static import show_static

# The default regime (EfficientNet-Lite0 frozen, cached features, 64 px; 32 px in smoke mode).
data = mk.prepare_data(preset="smoke" if SMOKE else "default")
model_cfg = data.model_config
pixels, _ = train_pairs(data, pixels=True)         # distillation learns pixels: it starts from real ones
M = 16 if SMOKE else 50
'''),
    md('''
## Expert trajectories

One dual-track run gives two trajectories (tracks A and B); the buffer also keeps their
noise report, whose clean probabilities choose the starting pairs of the distilled set.
'''),
    code('''
buffer = mk.build_buffer(data, tempfile.mkdtemp(prefix="mdw-nb03-"),
                         {"epochs": 4 if SMOKE else 10, "warmup_epochs": 1 if SMOKE else 2}, runs=1, progress=False)
buffer
'''),
    md('''
## Distilling

The monitor shows the matching loss, the learned student rates, and every few iterations the
validation R-sum of a model trained briefly on the current synthetic set. The matching loss
has one term per part of the student: the image tower (`image`) and the text head (`text`).
Each term is the squared distance from where the student ended to the expert's target,
divided by the squared distance the expert itself travelled, so 1 means the student got no
closer than its starting point, and above 1 it overshot. The `total` curve is their sum: 2 for
a student that stays put, lower is better.
'''),
    code('''
dcfg = dict(iterations=4 if SMOKE else 50, syn_steps=3 if SMOKE else 5,
            segment_epochs=1 if SMOKE else 2, max_start_epoch=2 if SMOKE else 6,
            batch_syn=8 if SMOKE else 25, lr_init=0.01 if SMOKE else None,
            ceo_every=2 if SMOKE else 25, save_maps_every=0, progress=False)
# CEO region maps cost about 10 s each (50 images, 64 px, one thread) against about 1 s per iteration,
# so they are refreshed every 25 iterations here; this notebook does not show them, so none are saved.
quick = EvalConfig(epochs=5 if SMOKE else 30, eval_every=5 if SMOKE else 10)

def val_rsum():
    """Validation R-sum of a model trained briefly on the current set (the test split is not touched)."""
    r = evaluate_distilled(distiller.syn, model_cfg, data.val_split(), data.val_split(), seeds=(0,), cfg=quick)
    return {"val": {"R-sum": r["val_mean"]["R-sum"]}}

monitor = TrainingMonitor.for_distillation(evaluate=val_rsum, evaluate_every=4 if SMOKE else 25)
monitor.show(static=False)
distiller = mk.distiller(data, buffer, method="mdw", budget=M, config=dcfg, callback=monitor.callback)
syn = distiller.run()
monitor.snapshot()
summary = distiller.summary()
eta = summary.pop("eta") or {}
pd.Series({**summary, **{f"learned rate ({g})": f"{v:.4g}" for g, v in eta.items()}}).to_frame("distillation")
'''),
    md('''
## What the synthetic pairs look like

Each synthetic image starts as a real image chosen among the pairs stage 1 called clean;
its text is read back as the nearest real caption. Noise detection is not perfect, so some
starting pairs carried a wrong caption: the gallery frames those in red ("started
mismatched"; the filter shows only them). The figure under it puts the first starting images
next to what distillation made of them.
'''),
    code('''
near = syn.nearest_captions(data.train_text, data.train.captions, k=1)
labels = [row[0][0] for row in near]
started_bad = ~data.train.clean[syn.init_indices].numpy()
print(f"{int(started_bad.sum())} of {M} starting pairs ({started_bad.mean():.0%}) carried a wrong caption")
gallery = PairGallery(syn.images.detach(), labels, injected_noise=started_bad, noise_label="started mismatched",
                      page_size=8)
gallery.show();
''', tags=["readme-figure"]),
    code('''
k = min(6, M)
start_caps = [data.train.captions[int(i)] for i in syn.init_indices[:k]]
show_static(viz.plot_pairs(torch.cat([syn.init_images[:k], syn.images.detach()[:k].clamp(0, 1)]),
                           start_caps + labels[:k], titles=["start"] * k + ["distilled"] * k, ncols=k,
                           flags=list(started_bad[:k]) * 2));
'''),
    code('''
picked = syn.init_indices
pd.Series({"start pairs truly clean": f"{float(data.train.clean[picked].float().mean()):.3f}",
           "training pairs truly clean": f"{float(data.train.clean.float().mean()):.3f}",
           **{f"learned rate ({g})": f"{v:.4g}" for g, v in syn.learning_rates().items()}}).to_frame("set")
'''),
    md('''
## Does it train a model?

Fresh models are trained on the distilled set (with P~ as targets and the learned rates)
and, for comparison, on *M* random real training pairs (noise included) and on *M* random
pairs among those stage 1 called clean. The epoch is chosen on the validation split; the test
R-sum (out of 600, mean over seeds) is reported.
'''),
    code('''
ecfg = {"epochs": 6 if SMOKE else 100, "eval_every": 3 if SMOKE else 10}
seeds = (0,) if SMOKE else (0, 1, 2)
distilled = mk.evaluate(syn, data, seeds=seeds, config=ecfg)
coresets = {name: mk.run_method(name, data, M, {"dual_track": buffer}, eval_config=ecfg, seeds=seeds)
            for name in ("random", "clean_random")}
table = pd.DataFrame({f"MDW distilled ({M} pairs)": distilled["mean"],
                      f"random real ({M} pairs)": coresets["random"]["mean"],
                      f"random predicted-clean real ({M} pairs)": coresets["clean_random"]["mean"]}).round(1)
table.loc["R-sum sd"] = [r["sd"].get("R-sum", float("nan")) for r in (distilled, *coresets.values())]
table.round(1)
'''),
    code(FOOTER),
]

# ---------------------------------------------------------------------------------------------
NB04 = [
    md('''
# 04 · Inspecting correspondences and emphasised regions

Two parts of MDW are easiest to understand by looking at them:

* the learned **correspondence matrix** P~: row *i* says how much synthetic image *i*
  matches each synthetic text. It starts near the identity: 90% of a row's mass on its own
  text, and the other 10% given to the texts the dual-track experts already match with the
  image (their *prior*). Where mass moves off the diagonal, distillation found that an image
  also fits another text;
* the **region maps** of correspondence-enhanced optimisation (CEO): for each synthetic
  image, a map of where its similarity to its top texts is decided. Pixels inside the map
  are updated more, so distillation spends its changes where the image-text match is
  decided. In the default regime (EfficientNet-Lite0 with ImageNet weights, frozen, 64 px)
  the maps are Grad-CAM on the tower's stride-2 feature map (32 x 32 cells; its last map is
  only 2 x 2 at this size).

This notebook distils the `shapes` data in that regime: its captions name objects and its
objects have boxes, so we can check P~ against what the scenes share and the maps against
the boxes. It uses the smaller pixel step (`lr_img=0.001`) that keeps the images readable.
'''),
    code(SETUP),
    code('''
import tempfile
import mdw_kit as mk
from mdw_kit.distill import diagnostics as diag
from mdw_kit.evaluation.pointing import distilled_pointing_game
from widgets import CorrespondenceHeatmap, RegionViewer, TrainingMonitor

# The default preset's model and experts (features of the frozen backbone cached once).
data = mk.prepare_data("shapes", noise=0.5, options={"num_images": 150 if SMOKE else 600, "image_size": 64})
buffer = mk.build_buffer(data, tempfile.mkdtemp(prefix="mdw-nb04-"), runs=1 if SMOKE else 2,
                         config={"epochs": 3, "warmup_epochs": 1} if SMOKE else None, progress=False)
print(f"{len(data.train)} training pairs, {data.model_config.tower} at {data.train.image_size} px; "
      f"expert noise detection AUROC {buffer.consensus.summary()['auroc']:.3f}")
'''),
    code('''
dcfg = dict(iterations=6 if SMOKE else 100, lr_img=0.001, progress=False, save_maps_every=3 if SMOKE else 20,
            **(dict(syn_steps=3, segment_epochs=1, max_start_epoch=2, batch_syn=8) if SMOKE else {}))
monitor = TrainingMonitor.for_distillation()      # matching loss and learned rates (no evaluation here)
monitor.show(static=False)
syn = mk.distill(data, buffer, method="mdw", budget=16 if SMOKE else 100, config=dcfg, callback=monitor.callback)
monitor.snapshot()
print("region maps saved at iterations", [it for it, _ in syn.map_history])
'''),
    md('''
## The correspondence matrix

The default view shows **what moved**: each row divided by its sum, with the diagonal set
to zero, on its own colour scale; beside it, the mean off-diagonal share of a row (learned
and at the start) and the largest off-diagonal entries, each with its image and the
nearest real captions of both texts. The menus switch to the full learned matrix, the
initial one or their difference, and sort rows and columns by draw order, diagonal
strength or a clustering that puts pairs sharing texts together. Click a cell to see the
synthetic image, what its text reads as and the value.
'''),
    code('''
heatmap = CorrespondenceHeatmap.from_distilled(syn, data.train_text, data.train.captions, k=2)
heatmap.select(0, 0)   # the buttons under "largest off-diagonal entries" select those pairs
heatmap.show();
''', tags=["readme-figure"]),
    md('''
Is what moved meaningful? Four checks on this run: the off-diagonal share of a row, split
by whether the row's starting pair was clean or mismatched (a mismatched pair's image does not
fit its own caption, so P~ should move its mass elsewhere: the dual-track mechanism at work in
the correspondence); the Spearman correlation over *i* ≠ *j* between P~_ij and the
similarity of the real captions nearest texts *i* and *j*; and the mean P~_ij between scenes
that share a named object over scenes that share none (above 1: P~ links scenes with common
objects). The last two are shown for the starting P~ too: the experts' prior already puts
structure there, and the question is what distillation does with it. Over 3 seeds of
this set-up (`benchmarks/bench_mechanisms.py`, `docs/results.md`) the share grew from
0.10 to 0.41, rows that started mismatched ended with 0.59 of their mass off the diagonal
against 0.39 for clean ones, the Spearman correlation went from 0.69 at the start to 0.62 and
the shared-object ratio from 3.8 to 3.3 (started evenly instead, without the prior, P~ learns
0.25 and 2.0 on its own); the pixel change says how far the images moved from their start.
'''),
    code('''
figs = diag.mechanism_figures(syn, data.train, data.train_text)
mis = figs["mismatched_start"]   # the noise was injected, so we know which starting pairs were mismatched
print(f"{int(round((~data.train.clean[syn.init_indices]).sum().item()))} of {len(syn.init_indices)} starting pairs "
      "were mismatched (noise detection let them through)")
pd.Series({"off-diagonal share of a row (start)": figs["off_share_start"],
           "off-diagonal share of a row (learned)": figs["off_share"],
           "  rows that started from a clean pair": mis["off_share_clean"],
           "  rows that started from a mismatched pair": mis["off_share_mismatched"],
           "Spearman with caption similarity (start)": figs["caption_spearman_start"],
           "Spearman with caption similarity (learned)": figs["caption_spearman"],
           "shared-object ratio (start)": figs["shared_object_start"]["ratio"],
           "shared-object ratio (learned)": figs["shared_object"]["ratio"],
           "mean absolute pixel change": figs["pixel_change"]}, name="this run").round(3).to_frame()
'''),
    md('''
## Emphasised regions

The left image is the real image a synthetic pair started from (object boxes outlined);
the right one is the synthetic image with its region map overlaid. The sliders pick the
pair, the saved iteration and the opacity of the map.
'''),
    code('''
game = distilled_pointing_game(syn, data.train, data.train_text)
rows = data.train.pair_image[syn.init_indices].tolist()
viewer = RegionViewer.from_distilled(syn, labels=game["top_captions"], boxes=[data.train.boxes[r] for r in rows])
viewer.show();
'''),
    md('''
## Pointing game

For every synthetic image: take its top text (the largest entry of its row of P~), read it
as the nearest real caption, and find the objects of its starting image that caption
names. A **hit** is a region-map peak inside one of those boxes; *among named* counts only the
images whose top text names one of their objects at all (a pair that started mismatched, which
noise detection let through, names none and can never hit). *Chance* is what a
uniformly random peak would score (the share of the image those boxes cover). The first
saved maps are computed on the starting images, the last ones on the images distillation
produced, so the two rows also show whether the emphasis survives the pixel updates. Over 3
seeds of this set-up the last maps scored 0.64 (0.76 among named; chance about 0.21): well
above chance, short of the 0.85 we aim for, because only about 85% of the top texts name
an object of their image at all.
'''),
    code('''
first = distilled_pointing_game(syn, data.train, data.train_text, maps=syn.map_history[0][1])
pd.DataFrame({"first saved maps": {"pointing game": first["share"], "among named": first["share_named"],
                                   "chance": first["chance"]},
              "last saved maps": {"pointing game": game["share"], "among named": game["share_named"],
                                  "chance": game["chance"]}}).T.assign(
    images=game["num_images"], top_text_names_an_object=game["named"]).round(3)
'''),
    code(FOOTER),
]

# ---------------------------------------------------------------------------------------------
NB05 = [
    md('''
# 05 · Ablations

MDW has three parts beyond plain trajectory matching: dual-track experts (stage 1), a
learnable correspondence P~, and CEO region emphasis. Each has a one-switch ablation
registered next to the baselines (`mdw_kit.distill.methods.METHODS`), all on one code
path. The panel below runs a small configuration in the kernel: pick a method, turn a
part off, choose the budget and the noise rate, press *run*; each result joins the table
and the plot, named by the method that ran (`mdw_no_ceo` is MDW with CEO off) with its
description. The cells after it run a few configurations the same way, so the saved
notebook holds a table. The sizes are small (minutes on a laptop CPU) and there is one seed,
so differences of a few R-sum mean nothing here (between seeds the benchmark's figures move by
4-8); `docs/results.md` has the full runs over several seeds.
'''),
    code(SETUP),
    code('''
from mdw_kit.experts.dual_track import DualTrackConfig
from widgets import AblationPanel
from widgets.ablation import MethodRunner

runner = MethodRunner(
    source="openmoji", source_options={"image_size": 32 if SMOKE else 64, "limit": 400 if SMOKE else 1500},
    dual_track=DualTrackConfig(epochs=3 if SMOKE else 10, warmup_epochs=1 if SMOKE else 2, batch_size=128,
                               progress=False),
    distill=dict(iterations=2 if SMOKE else 30, syn_steps=2 if SMOKE else 5, segment_epochs=1 if SMOKE else 2,
                 max_start_epoch=2 if SMOKE else 5, batch_syn=10 if SMOKE else 20,
                 lr_init=0.01 if SMOKE else None, ceo_every=2 if SMOKE else 10, save_maps_every=0,
                 progress=False),
    eval_cfg=dict(epochs=5 if SMOKE else 100, eval_every=5 if SMOKE else 10, full_epochs=2 if SMOKE else 10),
    seeds=(0,))
panel = AblationPanel(runner, budgets=(10, 20, 50), noise_rate=0.5)
panel.show(static=False);   # the picture for a saved copy is attached after the runs below
''', tags=["readme-figure"]),
    code('''
# The same runs a reader would click: MDW, each part off in turn, and a random real subset.
panel.budget.value = 10 if SMOKE else 20
for method, off in [("mdw", None), ("mdw", "ceo"), ("mdw", "learnable_corr"), ("mdw", "dual_track"),
                    ("random", None)]:
    panel.method.value = method
    for name, box in panel.switches.items():
        box.value = name != off
    panel.run()
panel.snapshot()
panel.results[["method", "description", "budget", "noise_rate", "R-sum", "TR@1", "IR@1", "seconds"]]
'''),
    code('''
r = panel.results.set_index("method")["R-sum"]
print(f"MDW {r['mdw']:.1f} against {r['random']:.1f} for random real pairs "
      f"({'above' if r['mdw'] > r['random'] else 'not above'} it in this one-seed run)")
'''),
    code(FOOTER),
]

NOTEBOOKS = {
    "01_data_and_noise.ipynb": NB01,
    "02_dual_track_noise_detection.ipynb": NB02,
    "03_distillation.ipynb": NB03,
    "04_correspondences_and_regions.ipynb": NB04,
    "05_ablations.ipynb": NB05,
}


def build(name: str, cells: list) -> nbformat.NotebookNode:
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for k, cell in enumerate(nb.cells):
        cell["id"] = f"{name[:2]}-{k:02d}"
    return nb


def render(name: str) -> str:
    """The text of notebook ``name`` as this file writes it (validated)."""
    nb = build(name, NOTEBOOKS[name])
    nbformat.validate(nb)
    return nbformat.writes(nb) + "\n"


def stale(out: Path = ROOT / "notebooks") -> list[str]:
    """Notebooks whose file differs from what :func:`render` gives (missing ones included)."""
    return [name for name in NOTEBOOKS
            if not (out / name).exists() or (out / name).read_text(encoding="utf-8") != render(name)]


def main() -> None:
    out = ROOT / "notebooks"
    out.mkdir(exist_ok=True)
    for name, cells in NOTEBOOKS.items():
        (out / name).write_text(render(name), encoding="utf-8")
        print(f"wrote {out / name} ({len(cells)} cells)")


if __name__ == "__main__":
    main()
